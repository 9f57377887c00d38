defmodule Synod.TelemetryTest do
  use ExUnit.Case, async: false

  setup do
    on_exit(fn ->
      for {id, _, _} <- Synod.Telemetry.list_handlers(), do: Synod.Telemetry.detach(id)
    end)
  end

  test "an attached handler receives the event, its measurements, metadata and config" do
    me = self()

    :ok =
      Synod.Telemetry.attach(
        "t1",
        [:synod, :test, :ping],
        fn e, m, md, c -> send(me, {e, m, md, c}) end,
        :cfg
      )

    assert {:error, :already_exists} =
             Synod.Telemetry.attach("t1", [:synod, :x], fn _, _, _, _ -> :ok end, nil)

    :ok = Synod.Telemetry.execute([:synod, :test, :ping], %{count: 3}, %{hub: :h})
    assert_receive {[:synod, :test, :ping], %{count: 3}, %{hub: :h}, :cfg}
    :ok = Synod.Telemetry.execute([:synod, :test, :other], %{}, %{})
    refute_receive {[:synod, :test, :other], _, _, _}, 50
    assert :ok = Synod.Telemetry.detach("t1")
    assert {:error, :not_found} = Synod.Telemetry.detach("t1")
    :ok = Synod.Telemetry.execute([:synod, :test, :ping], %{count: 4}, %{})
    refute_receive {_, %{count: 4}, _, _}, 50
  end

  test "attached? says whether an event reaches a handler attached here" do
    # the test build does not load :telemetry
    refute :erlang.function_exported(:telemetry, :execute, 3)
    refute Synod.Telemetry.attached?([:synod, :test, :seen])
    :ok = Synod.Telemetry.attach("t2", [:synod, :test, :seen], fn _, _, _, _ -> :ok end, nil)
    assert Synod.Telemetry.attached?([:synod, :test, :seen])
    refute Synod.Telemetry.attached?([:synod, :test, :unseen])
    :ok = Synod.Telemetry.detach("t2")
    refute Synod.Telemetry.attached?([:synod, :test, :seen])
  end

  test "a handler that raises is detached and the emitter goes on" do
    :ok =
      Synod.Telemetry.attach("bad", [:synod, :test, :boom], fn _, _, _, _ -> raise "no" end, nil)

    ExUnit.CaptureLog.capture_log(fn ->
      assert :ok = Synod.Telemetry.execute([:synod, :test, :boom], %{}, %{})
    end)

    assert Synod.Telemetry.list_handlers() == []
  end

  test "span emits start and stop with a duration, and exception before re-raising" do
    me = self()
    events = for s <- [:start, :stop, :exception], do: [:synod, :test, :span, s]

    :ok =
      Synod.Telemetry.attach_many(
        "span",
        events,
        fn e, m, md, _ -> send(me, {List.last(e), m, md}) end,
        nil
      )

    assert 42 = Synod.Telemetry.span([:synod, :test, :span], %{k: 1}, fn -> 42 end)
    assert_receive {:start, %{monotonic_time: _}, %{k: 1}}
    assert_receive {:stop, %{duration: d}, %{k: 1}} when is_integer(d) and d >= 0

    assert_raise RuntimeError, fn ->
      Synod.Telemetry.span([:synod, :test, :span], %{}, fn -> raise "x" end)
    end

    assert_receive {:exception, %{duration: _}, %{kind: :error, reason: %RuntimeError{}}}
  end

  test "bad arguments name themselves" do
    assert_raise ArgumentError, ~r/events/, fn ->
      Synod.Telemetry.attach_many(:x, [[]], fn _, _, _, _ -> :ok end, nil)
    end

    assert_raise ArgumentError, ~r/handler/, fn ->
      Synod.Telemetry.attach(:x, [:synod], fn _ -> :ok end, nil)
    end

    assert {:error, {:bad_request, :nope}} = GenServer.call(Synod.Telemetry, :nope)
  end
end
