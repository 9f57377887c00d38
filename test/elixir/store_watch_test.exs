defmodule Synod.StoreWatchTest do
  # Watches far behind the head of the history (issue 18): they catch up
  # through every event, in order, once; they never hold back the other
  # watches served on the same node, nor what rides on watches (locks).
  # One 3-peer store with 50,000 events of history serves every test.
  use ExUnit.Case, async: false

  alias Synod.Store
  alias Synod.Test.{Cluster, Raft, Wait}
  alias Synod.Test.Store, as: Helpers

  @moduletag timeout: 180_000
  @events 50_000

  setup_all do
    history = [history_max_events: 4 * @events, history_max_bytes: 256 * 1024 * 1024]

    %{store: store, nodes: nodes, leader: leader, dir: dir} =
      Cluster.store!(3, prefix: "sw", store_opts: [store: history])

    [a | _] = nodes -- [leader]
    filled = :erpc.call(a, Helpers, :fill, [store, @events], 300_000)

    {:ok, store: store, nodes: nodes, a: a, leader: leader, filled: filled, dir: dir}
  end

  defp on(node, fun, args), do: :erpc.call(node, Helpers, fun, args, 60_000)

  test "a watch from revision 1 receives all 50,000 events, in order, once",
       %{store: s, a: a, filled: filled} do
    on(a, :collect, [s, "fill/", [prefix: true, from: 1], @events, self(), :all])
    assert_receive {:watched, :all, events}, 120_000

    assert length(events) == @events
    assert length(Enum.uniq(events)) == @events
    revs = Enum.map(events, &elem(&1, 0))
    assert revs == Enum.sort(revs)
    assert List.last(revs) == filled
  end

  test "1,000 watchers see new puts while a watch on their node is 50,000 events behind",
       %{store: s, a: a, leader: leader} do
    :ok = on(a, :watchers, [s, "live", 1_000, self()])
    on(a, :collect, [s, "fill/", [prefix: true, from: 1], @events, self(), :lagging])

    for v <- ["1", "2", "3"], do: {:ok, _, nil} = :erpc.call(leader, Store, :put, [s, "live", v])

    seen =
      Wait.until(
        fn ->
          seen = drain_saw()
          if Enum.count(seen, fn {_i, vs} -> vs == ["1", "2", "3"] end) == 1_000, do: seen
        end,
        60_000
      )

    assert map_size(seen) == 1_000
    assert_receive {:watched, :lagging, events}, 120_000
    assert length(events) == @events
  end

  test "a lock waiter on a node with a lagging watch is granted",
       %{store: s, a: a, leader: leader} do
    holder = :erpc.call(leader, Helpers, :lock_holder, [s, "L", self(), :holder])
    assert_receive {:holding, :holder}, 30_000
    on(a, :collect, [s, "fill/", [prefix: true, from: 1], @events, self(), :lagging_lock])
    :ok = on(a, :lock_waiter, [s, "L", self(), :waiter])

    # The waiter is queued (its contender key is in) before the holder lets go.
    contenders = Synod.Lock.contenders_prefix("L")

    Wait.until(fn ->
      match?({:ok, _, 2, _}, Store.range(s, contenders, prefix: true, count_only: true))
    end)

    send(holder, :release)
    assert_receive {:granted, :waiter, token} when is_integer(token), 30_000
    assert_receive {:watched, :lagging_lock, events}, 120_000
    assert length(events) == @events
  end

  test "a watch behind the retained history ends with {:compacted, rev}; others go on",
       %{nodes: nodes, a: a, dir: dir} do
    # A store of its own: the others' history must stay whole.
    s = :"swc#{System.unique_integer([:positive])}"
    :ok = Store.start(s, nodes, Path.join(dir, "compacted"))
    Raft.wait_leader(s, nodes)
    :erpc.call(a, Helpers, :fill, [s, 200, 1, 4], 60_000)
    {:ok, {:ok, _, {:compacted, 100}}} = Synod.Raft.command(s, Synod.Store.Command.compact(100))

    on(a, :collect, [s, "fill/", [prefix: true, from: 101], 10, self(), :kept])
    {:ok, ref} = :erpc.call(a, Store, :watch, [s, "fill/", [prefix: true, from: 50]])
    assert_receive {:watched, :kept, [{101, _} | _]}, 30_000
    # The watch belongs to the :erpc call's process, gone by now; one of our
    # own shows the message.
    :ok = :erpc.call(a, Store, :unwatch, [s, ref])
    {:ok, mine} = Store.watch(s, "fill/", prefix: true, from: 99)
    assert_receive {:synod_watch, ^mine, {:error, {:compacted, 100}}}, 30_000
  end

  # Every {:saw, i, value} received so far, as %{i => [value]} in arrival order.
  defp drain_saw do
    receive do
      {:saw, i, v} ->
        Process.put(:saw, Map.update(Process.get(:saw, %{}), i, [v], &(&1 ++ [v])))
        drain_saw()
    after
      0 -> Process.get(:saw, %{})
    end
  end
end
