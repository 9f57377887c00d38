defmodule Synod.CoordOptionsTest do
  # The toolkit's pure parts: the option validator and deadlines.
  use ExUnit.Case, async: true

  alias Synod.Coord.{Deadline, Options}

  @schema [
    ttl: [type: {:ms, 30}, default: 10_000],
    timeout: [type: :timeout, default: :infinity],
    call_timeout: [type: :pos_integer, default: 5_000],
    store: [type: :atom, required: true],
    fun: [type: {:or, [fun: 0, fun: 1]}]
  ]

  test "defaults filled, given options kept, maps accepted" do
    assert %{ttl: 10_000, timeout: :infinity, call_timeout: 5_000, store: :s} =
             Options.validate!([store: :s], @schema)

    assert %{ttl: 30, timeout: 0, store: :s} =
             Options.validate!(%{ttl: 30, timeout: 0, store: :s}, @schema)

    refute Map.has_key?(Options.validate!([store: :s], @schema), :fun)
  end

  test "one message shape, naming the option" do
    for {opts, message} <- [
          {[store: :s, ttl: 5], "invalid option ttl: expected an integer of ms >= 30, got: 5"},
          {[store: :s, timeout: -1],
           "invalid option timeout: expected an integer of ms >= 0 or :infinity, got: -1"},
          {[store: :s, fun: fn _, _ -> :ok end], "invalid option fun: expected a function of 0"},
          {[store: :s, nope: 1],
           "unknown option :nope (known: ttl, timeout, call_timeout, store, fun)"},
          {[], "missing option store"},
          {[store: :s, store: :t], "option store given twice"},
          {:bad, "options must be a keyword list or a map, got: :bad"}
        ] do
      error = assert_raise ArgumentError, fn -> Options.validate!(opts, @schema) end
      assert String.starts_with?(error.message, message), error.message
    end
  end

  test "keys that are not options are named as what they are" do
    error =
      assert_raise ArgumentError, fn ->
        Options.validate!(%{colour: :red}, [topic: [type: :any]], "filter")
      end

    assert error.message == "unknown filter :colour (known: topic)"
  end

  test "positional arguments" do
    assert "k" == Options.check!("k", :key, {:binary, 10})

    assert_raise ArgumentError,
                 ~s(invalid argument key: expected a binary of 1..10 bytes, got: ""),
                 fn ->
                   Options.check!("", :key, {:binary, 10})
                 end
  end

  test "a schema entry without a default or required flag stays out of the map" do
    schema = [a: [type: :atom], b: [type: :integer, default: 1]]
    assert Options.validate!([], schema) == %{b: 1}
    assert Options.validate!([a: :x], schema) == %{a: :x, b: 1}
    assert Options.validate!([b: 2, a: :y], schema) == %{a: :y, b: 2}

    assert_raise ArgumentError, "options must be a keyword list or a map, got: [:a]", fn ->
      Options.validate!([:a], schema)
    end
  end

  # Synod.Lock checks its positional arguments by guards first (its hot
  # path): a bad one still gets the validator's message, before any store
  # is asked (none runs here).
  test "the lock's positional arguments are named when bad" do
    ok = fn -> :ok end

    for {args, message} <- [
          {[nil, "k", ok], "invalid argument store: expected an atom, got: nil"},
          {["s", "k", ok], ~s(invalid argument store: expected an atom, got: "s")},
          {[:s, "", ok], ~s(invalid argument key: expected a binary of 1..3000 bytes, got: "")},
          {[:s, :k, ok], "invalid argument key: expected a binary of 1..3000 bytes, got: :k"},
          {[:s, "k", fn _, _ -> :ok end], ~r/invalid argument fun: expected a function of 0/}
        ],
        call <- [&Synod.Lock.lock/3, &Synod.Lock.try_lock/3] do
      assert_raise ArgumentError, message, fn -> apply(call, args) end
    end

    assert_raise ArgumentError, ~r/invalid option ttl/, fn ->
      Synod.Lock.lock(:s, "k", ok, ttl: 1)
    end

    assert Synod.Lock.lock(:no_such_store, "k", ok) == {:error, {:unknown_store, :no_such_store}}
  end

  test "a budget bounds each round trip by what is left" do
    assert Deadline.opts(Deadline.budget(:infinity, 5_000)) == [timeout: 5_000]
    assert [timeout: t] = Deadline.opts(Deadline.budget(60_000, 5_000))
    assert t == 5_000
    assert [timeout: t] = Deadline.opts(Deadline.budget(100, 5_000))
    assert t in 1..100
    assert Deadline.opts(Deadline.budget(0, 5_000)) == [timeout: 1]
    assert Deadline.passed?(Deadline.new(0))
    refute Deadline.passed?(Deadline.new(:infinity))
    assert Deadline.remaining(:infinity) == :infinity
  end
end
