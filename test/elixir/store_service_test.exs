defmodule Synod.StoreServiceTest do
  # Synod.Store on real peers (3 voters): keys and transactions from every
  # node, watches in revision order and resumed, leases kept alive, expired,
  # and surviving the leader's death with a restarted countdown, and the
  # whole store restarted from disk.
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Store
  alias Synod.Test.{Cluster, Raft, Wait}

  @moduletag timeout: 120_000

  setup do
    {:ok, Cluster.store!(3, prefix: "st")}
  end

  defp on(node, fun, args), do: :erpc.call(node, Store, fun, args, 15_000)

  test "keys, ranges and transactions agree from every node", %{store: s, nodes: [a, b, c]} do
    assert {:ok, r1, nil} = on(a, :put, [s, "k/1", "one"])
    assert {:ok, r2, nil} = on(b, :put, [s, "k/2", "two"])
    assert r2 == r1 + 1
    assert {:ok, %{value: "one", version: 1, mod_revision: ^r1}} = on(c, :get, [s, "k/1"])
    assert {:ok, nil} = on(c, :get, [s, "nope"])

    assert {:ok, [%{key: "k/1"}, %{key: "k/2"}], 2, false} =
             on(c, :range, [s, "k/", [prefix: true]])

    # Compare-and-swap on mod_revision: one winner.
    swap = fn node, v ->
      on(node, :txn, [s, [{:mod_revision, "k/1", :==, r1}], [{:put, "k/1", v}], [], []])
    end

    results = [swap.(a, "x"), swap.(b, "y")]
    assert [true, false] == results |> Enum.map(&elem(&1, 2)) |> Enum.sort(:desc)

    assert {:ok, _, 2, _} = on(a, :delete, [s, "k/", [prefix: true]])
    # A stale read on a follower catches up with the deletes.
    Wait.until(fn ->
      on(b, :range, [s, "k/", [prefix: true, consistency: :stale]]) == {:ok, [], 0, false}
    end)

    assert_raise ArgumentError, fn -> Store.put(s, "", "empty key") end
  end

  test "watches deliver every change in revision order, and resume from a revision",
       %{store: s, nodes: [a, b, _c]} do
    {:ok, ref} = Store.watch(s, "w/", prefix: true)

    for i <- 1..30, do: {:ok, _, _} = on(Enum.random([a, b]), :put, [s, "w/#{rem(i, 5)}", "#{i}"])
    {:ok, _, _} = on(a, :put, [s, "other", "not watched"])
    {:ok, _, 5, _} = on(b, :delete, [s, "w/", [prefix: true]])

    events = collect(ref, 35)
    revs = Enum.map(events, &elem(&1, 1))
    assert revs == Enum.sort(revs) and length(Enum.uniq(revs)) == 31
    assert Enum.all?(events, fn {_, _, kv, _} -> String.starts_with?(kv.key, "w/") end)
    assert Enum.count(events, &(elem(&1, 0) == :delete)) == 5

    # Resume after the 10th event: the same events again, from there.
    :ok = Store.unwatch(s, ref)
    {_, tenth, _, _} = Enum.at(events, 9)
    {:ok, ref2} = Store.watch(s, "w/", prefix: true, from: tenth + 1)
    assert collect(ref2, 35 - 10) == Enum.drop(events, 10)
  end

  test "a lease kept alive outlives its TTL; left alone it expires with its keys",
       %{store: s, nodes: [a, b, _]} do
    {:ok, kept, 400} = on(a, :grant, [s, 400])
    {:ok, dropped, 400} = on(b, :grant, [s, 400])
    {:ok, _, nil} = on(a, :put, [s, "kept", "1", [lease: kept]])
    {:ok, _, nil} = on(a, :put, [s, "dropped", "1", [lease: dropped]])

    for _ <- 1..8 do
      Process.sleep(100)
      assert {:ok, 400} = on(b, :keep_alive, [s, kept])
    end

    assert {:ok, %{lease: ^kept}} = on(a, :get, [s, "kept"])
    assert {:ok, nil} = on(a, :get, [s, "dropped"])
    assert {:error, :lease_not_found} = on(a, :keep_alive, [s, dropped])
    assert {:ok, _rev} = on(b, :revoke, [s, kept])
    assert {:ok, nil} = on(a, :get, [s, "kept"])
  end

  test "a lease survives the leader's death: its countdown restarts at the new leader",
       %{store: s, nodes: nodes, leader: leader} do
    [survivor | _] = nodes -- [leader]
    {:ok, lease, 1_000} = on(survivor, :grant, [s, 1_000])
    granted = System.monotonic_time(:millisecond)
    {:ok, _, nil} = on(survivor, :put, [s, "held", "1", [lease: lease]])
    Process.sleep(400)
    LocalCluster.kill(leader)
    Raft.wait_leader(s, nodes -- [leader])

    # Past the TTL counted from the grant, but before a TTL counted from the
    # kill: still there, because the new leader, elected after the kill,
    # started a full TTL of its own.
    Process.sleep(max(granted + 1_150 - System.monotonic_time(:millisecond), 0))
    assert {:ok, %{lease: ^lease}} = on(survivor, :get, [s, "held"])
    # And then it expires, committed by the new leader.
    Wait.until(fn -> on(survivor, :get, [s, "held"]) == {:ok, nil} end, 5_000)
  end

  test "the whole store restarted from disk keeps keys, revision and leases",
       %{store: s, nodes: nodes, dir: dir} do
    [a | _] = nodes
    for i <- 1..50, do: {:ok, _, _} = on(a, :put, [s, "d/#{i}", "#{i}"])
    {:ok, lease, _} = on(a, :grant, [s, 60_000])
    {:ok, rev} = on(a, :revision, [s])

    for n <- nodes, do: :ok = :erpc.call(n, Store, :stop_member, [s])
    :ok = Store.start(s, nodes, dir)
    Raft.wait_leader(s, nodes)

    assert {:ok, ^rev} = on(a, :revision, [s])
    assert {:ok, _, 50, false} = on(a, :range, [s, "d/", [prefix: true, count_only: true]])
    assert {:ok, [{^lease, 60_000, []}]} = on(a, :leases, [s])
  end

  defp collect(ref, n, acc \\ [])
  defp collect(_ref, n, acc) when length(acc) >= n, do: acc

  defp collect(ref, n, acc) do
    receive do
      {:synod_watch, ^ref, events} when is_list(events) -> collect(ref, n, acc ++ events)
    after
      10_000 -> flunk("watch gave #{length(acc)} of #{n} events")
    end
  end
end
