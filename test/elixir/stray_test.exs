defmodule Synod.StrayTest do
  # Synod.Stray's `who` given as a function: built only when a line is
  # logged (the Raft member, the store's leases and watcher pass one, so an
  # accepted request costs no string building), and named in the line when
  # one is.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  alias Synod.Stray

  test "an accepted call never builds the name; a refused one names it in the log" do
    me = self()
    who = fn -> send(me, :who_built) && "lazy test process" end
    answer = fn request, _from, state -> {:reply, {:took, request}, state} end

    assert Stray.call(:fine, {self(), make_ref()}, :s, who, true, answer) ==
             {:reply, {:took, :fine}, :s}

    refute_received :who_built

    log =
      capture_log(fn ->
        assert Stray.call(:junk, {self(), make_ref()}, :s, who, false, answer) ==
                 {:reply, {:error, {:bad_request, :junk}}, :s}
      end)

    assert_received :who_built
    assert log =~ "lazy test process ignored a call: :junk"
  end

  test "casts and messages name a lazy `who` as they name a string" do
    log =
      capture_log(fn ->
        assert Stray.cast(:junk, :s, fn -> "lazy caster" end) == {:noreply, :s}
      end)

    assert log =~ "lazy caster ignored a cast: :junk"

    # One line a second per process: the next one in this process is counted.
    log = capture_log(fn -> Stray.ignored("plain name", :message, :more) end)
    refute log =~ "plain name"
  end
end
