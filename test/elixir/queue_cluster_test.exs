defmodule Synod.QueueClusterTest do
  # Synod.Queue on a 3-voter store on real peers: producers and consumers on
  # every node (exactly once, revision order), the acknowledged mode's
  # redelivery and conditional ack, and TTLs. A leader killed mid-stream:
  # queue_failover_test.exs.
  use ExUnit.Case, async: false

  alias Synod.Queue
  alias Synod.Test.Queue, as: Q

  @moduletag timeout: 120_000

  setup_all do
    ctx = Q.start_store("qc")
    on_exit(fn -> Q.stop(ctx) end)
    ctx
  end

  test "polling an empty queue writes the log once, then reads only", %{store: s} = ctx do
    name = "poll#{System.unique_integer([:positive])}"
    commit = fn -> :erpc.call(ctx.leader, Synod.Raft, :status, [s]).commit end
    assert {:error, :empty} = Queue.dequeue(s, name, timeout: 0)
    c0 = commit.()
    for _ <- 1..5, do: assert({:error, :empty} = Queue.dequeue(s, name, timeout: 0))
    # Five looks at the empty queue: no log entry (each was one before; a
    # lease of another test expiring meanwhile would be one).
    assert commit.() - c0 < 5
    {:ok, _, rev} = Queue.enqueue(s, name, :v)
    assert {:ok, %{value: :v, revision: ^rev}} = Queue.dequeue(s, name, timeout: 0)
    assert {:error, :empty} = Queue.dequeue(s, name, timeout: 0)
  end

  test "producers and consumers on every node: each value once, in revision order", ctx do
    queue = {ctx.store, "work"}
    # Consumers first: they block on a watch until values come.
    consumers = for n <- ctx.nodes, do: Task.async(fn -> Q.on(n, :consume, [queue, 1_500]) end)

    producers =
      for {n, i} <- Enum.with_index(ctx.nodes),
          do: Task.async(fn -> Q.on(n, :produce, [queue, "p#{i}", 40]) end)

    produced =
      Enum.flat_map(Task.await_many(producers, 60_000), fn {ok, failed} ->
        assert failed == []
        ok
      end)

    consumed = Enum.map(Task.await_many(consumers, 60_000), & &1.items)
    all = List.flatten(consumed)

    # Every value exactly once, with the revision its enqueue returned.
    assert length(all) == 120
    assert Enum.sort(Enum.map(all, &{&1.value, &1.revision})) == Enum.sort(produced)

    # Every consumer got its values in revision order ...
    for items <- consumed,
        do: assert(Enum.map(items, & &1.revision) == Enum.sort(Enum.map(items, & &1.revision)))

    # ... and globally, the values were taken in revision order.
    taken = all |> Enum.sort_by(& &1.dequeue_revision) |> Enum.map(& &1.revision)
    assert taken == Enum.sort(taken)
    assert Enum.count(consumed, &(&1 != [])) >= 2, "one consumer took everything"
    assert {:ok, 0} = Queue.count(ctx.store, "work")
  end

  test "acknowledged mode: an unacked value comes back first; ack holds only with a live claim",
       ctx do
    {s, q} = {ctx.store, "acked"}
    {:ok, _, r1} = Queue.enqueue(s, q, "first")
    {:ok, _, r2} = Queue.enqueue(s, q, "second")
    assert r2 > r1

    assert {:ok, %{value: "first", revision: ^r1, receipt: rc1}} =
             Queue.dequeue(s, q, timeout: 1_000, visibility_timeout: 600)

    # Claimed values are skipped, not removed.
    assert {:ok, %{value: "second", receipt: rc2}} =
             Queue.dequeue(s, q, timeout: 1_000, visibility_timeout: 10_000)

    assert {:ok, 2} = Queue.count(s, q)
    assert :ok = Queue.ack(s, q, rc2)
    assert {:error, :lease_expired} = Queue.ack(s, q, rc2)
    {:ok, _, _r3} = Queue.enqueue(s, q, "third")

    # "first" was never acked: once the leader expired its claim's lease
    # it is handed out again, ahead of the newer "third".
    {:receipt, _, lease} = rc1

    Synod.Test.Wait.until(fn ->
      {:ok, leases} = Synod.Store.leases(ctx.store)
      not List.keymember?(leases, lease, 0)
    end)

    assert {:ok, %{value: "first", revision: ^r1, receipt: rc1b}} =
             Queue.dequeue(s, q, timeout: 10_000, visibility_timeout: 10_000)

    assert rc1b != rc1
    assert {:error, :lease_expired} = Queue.ack(s, q, rc1)
    assert :ok = Queue.ack(s, q, rc1b)
    assert {:ok, %{value: "third", receipt: nil}} = Queue.dequeue(s, q, timeout: 1_000)
    assert {:error, :empty} = Queue.dequeue(s, q, timeout: 0)
  end

  test "a plain dequeue is one txn; a claimed value is gone past, never taken", ctx do
    [node | _] = ctx.nodes
    # Counted on a peer: 20 enqueue + dequeue pairs, one txn each.
    assert %{txn: 40} = counts = Q.on(node, :count_requests, [:pairs, [{ctx.store, "one"}, 20]])
    assert Map.keys(counts) == [:txn]

    # A claim in the queue: a plain dequeue takes the oldest unclaimed value.
    {s, q} = {ctx.store, "mixed"}
    for v <- ~w(a b c), do: {:ok, _, _} = Queue.enqueue(s, q, v)

    assert {:ok, %{value: "a", receipt: receipt}} =
             Queue.dequeue(s, q, timeout: 1_000, visibility_timeout: 60_000)

    assert {:ok, %{value: "b", receipt: nil}} = Queue.dequeue(s, q, timeout: 1_000)
    assert {:ok, %{value: "c"}} = Queue.dequeue(s, q, timeout: 1_000)
    assert {:error, :empty} = Queue.dequeue(s, q, timeout: 0)
    assert :ok = Queue.ack(s, q, receipt)
    assert {:ok, 0} = Queue.count(s, q)
    # Empty and unclaimed: one txn answers empty (and a blocked one wakes).
    waiter = Task.async(fn -> Queue.dequeue(s, q, timeout: 5_000) end)
    Process.sleep(100)
    {:ok, _, rev} = Queue.enqueue(s, q, "d")
    assert {:ok, %{value: "d", revision: ^rev}} = Task.await(waiter)
  end

  test "a value with a TTL leaves the queue when its lease expires; bad arguments raise", ctx do
    {s, q} = {ctx.store, "ttl"}
    {:ok, _, _} = Queue.enqueue(s, q, "short", ttl: 300)
    {:ok, _, _} = Queue.enqueue(s, q, "kept")
    assert {:ok, 2} = Queue.count(s, q)
    Synod.Test.Wait.until(fn -> Queue.count(s, q) == {:ok, 1} end)
    assert {:ok, %{value: "kept"}} = Queue.dequeue(s, q, timeout: 0)

    assert_raise ArgumentError, fn -> Queue.enqueue(s, "", "x") end
    assert_raise ArgumentError, fn -> Queue.enqueue("store", "q", "x") end
    assert_raise ArgumentError, fn -> Queue.enqueue(s, q, "x", ttl: 0) end
    assert_raise ArgumentError, fn -> Queue.dequeue(s, q, timeout: -1) end
    assert_raise ArgumentError, fn -> Queue.dequeue(s, q, visibility: 5) end
    assert_raise ArgumentError, fn -> Queue.dequeue(s, q, visibility_timeout: 0) end
    assert_raise ArgumentError, fn -> Queue.ack(s, q, :nope) end
  end

  test "values of any term, canonically encoded; an oversized one is refused", ctx do
    s = ctx.store
    value = %{to: ["a@b", "c@d"], n: 1.5, at: {2026, 12, 2}, ref: make_ref()}
    {:ok, _, _} = Queue.enqueue(s, "terms", value)
    {:ok, _, _} = Queue.enqueue(s, "terms", "a binary")
    assert {:ok, %{value: ^value}} = Queue.dequeue(s, "terms", timeout: 1_000)
    assert {:ok, %{value: "a binary"}} = Queue.dequeue(s, "terms", timeout: 1_000)

    # Bytes not written by enqueue (a native writer) are handed out, not lost.
    {:ok, key, _} = Queue.enqueue(s, "terms", :placeholder)
    {:ok, _, _} = Synod.Store.put(s, key, "not a term")
    assert {:ok, %{value: {:undecodable, "not a term"}}} = Queue.dequeue(s, "terms")

    big = :binary.copy("x", 1_100_000)
    assert {:error, {:value_too_large, size, 1_044_480}} = Queue.enqueue(s, "terms", big)
    assert size > 1_044_480
    assert {:ok, 0} = Queue.count(s, "terms")
  end

  test "an unknown store is a named error at once" do
    assert {:error, {:unknown_store, :no_such_store}} = Queue.enqueue(:no_such_store, "q", 1)
    assert {:error, {:unknown_store, :no_such_store}} = Queue.dequeue(:no_such_store, "q")
    assert {:error, {:unknown_store, :no_such_store}} = Queue.count(:no_such_store, "q")
  end
end
