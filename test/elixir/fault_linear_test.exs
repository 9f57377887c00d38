defmodule Synod.Fault.LinearTest do
  # The fault suite's linearizability checker on histories whose verdict is
  # known: it must reject the non-linearizable ones and accept the good ones,
  # with indeterminate operations allowed to have taken effect or not.
  use ExUnit.Case, async: true

  alias Synod.Fault.Linear
  alias Synod.Fault.Linear.Register

  # {f, arg, type, value, invoked, completed}; completed nil = never
  defp history(ops) do
    for {{f, arg, type, value, inv, comp}, id} <- Enum.with_index(ops),
        do: %{id: id, f: f, arg: arg, type: type, value: value, invoke: inv, complete: comp}
  end

  defp check(ops), do: Linear.check(history(ops), Register)

  test "sequential and overlapping histories that are linearizable" do
    assert check([]) == :ok
    assert check([{:read, nil, :ok, nil, 0, 1}]) == :ok
    assert check([{:write, 1, :ok, nil, 0, 1}, {:read, nil, :ok, 1, 2, 3}]) == :ok

    # a read overlapping a write may see either value
    assert check([{:write, 1, :ok, nil, 0, 10}, {:read, nil, :ok, 1, 1, 2}]) == :ok
    assert check([{:write, 1, :ok, nil, 0, 10}, {:read, nil, :ok, nil, 1, 2}]) == :ok

    # concurrent writes may land in either order
    assert check([
             {:write, 1, :ok, nil, 0, 10},
             {:write, 2, :ok, nil, 1, 9},
             {:read, nil, :ok, 1, 11, 12}
           ]) == :ok

    assert check([
             {:write, 1, :ok, nil, 0, 1},
             {:cas, {1, 2}, :ok, nil, 2, 3},
             {:cas, {1, 3}, :fail, nil, 4, 5},
             {:read, nil, :ok, 2, 6, 7}
           ]) == :ok
  end

  test "histories that are not linearizable are rejected with the op that cannot be placed" do
    # a stale read after a write completed
    assert {:error, e} = check([{:write, 1, :ok, nil, 0, 1}, {:read, nil, :ok, nil, 2, 3}])
    assert e.op.f == :read

    # a value nobody wrote
    assert {:error, _} = check([{:read, nil, :ok, 7, 0, 1}])

    # two successful CAS from the same old value, one after the other
    assert {:error, _} =
             check([
               {:write, 0, :ok, nil, 0, 1},
               {:cas, {0, 1}, :ok, nil, 2, 3},
               {:cas, {0, 2}, :ok, nil, 4, 5}
             ])

    # a failed CAS whose compare must have held
    assert {:error, _} = check([{:write, 5, :ok, nil, 0, 1}, {:cas, {5, 6}, :fail, nil, 2, 3}])

    # a value seen, then the older one again (no write in between)
    assert {:error, _} =
             check([
               {:write, 1, :ok, nil, 0, 1},
               {:write, 2, :ok, nil, 2, 10},
               {:read, nil, :ok, 2, 3, 4},
               {:read, nil, :ok, 1, 5, 6}
             ])
  end

  test "indeterminate operations may take effect, late, or never" do
    # a timed-out write seen long after its client gave up
    assert check([{:write, 1, :info, :timeout, 0, 1}, {:read, nil, :ok, 1, 50, 51}]) == :ok
    # ... or never seen
    assert check([{:write, 1, :info, :timeout, 0, 1}, {:read, nil, :ok, nil, 50, 51}]) == :ok
    # a write that never completed (its VM was killed)
    assert check([{:write, 1, :info, nil, 0, nil}, {:read, nil, :ok, 1, 50, 51}]) == :ok
    # an indeterminate CAS that took effect
    assert check([
             {:write, 1, :ok, nil, 0, 1},
             {:cas, {1, 2}, :info, :timeout, 2, 3},
             {:read, nil, :ok, 2, 9, 10}
           ]) == :ok

    # but not before it was invoked
    assert {:error, _} = check([{:read, nil, :ok, 1, 0, 1}, {:write, 1, :info, :timeout, 2, 3}])

    # and once seen, its value cannot be unseen without a write
    assert {:error, _} =
             check([
               {:write, 1, :ok, nil, 0, 1},
               {:write, 2, :info, nil, 2, nil},
               {:read, nil, :ok, 2, 3, 4},
               {:read, nil, :ok, 1, 5, 6}
             ])
  end

  test "a search that runs out of budget says so instead of guessing" do
    ops = for i <- 1..12, do: {:write, i, :info, nil, i, nil}

    assert Linear.check(history(ops ++ [{:read, nil, :ok, 99, 100, 101}]), Register, 50) ==
             {:unknown, :budget}
  end
end
