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
    assert {:ok, 0} = Queue.count(queue)
  end

  test "acknowledged mode: an unacked value comes back first; ack holds only with a live claim",
       ctx do
    queue = {ctx.store, "acked"}
    {:ok, _, r1} = Queue.enqueue(queue, "first")
    {:ok, _, r2} = Queue.enqueue(queue, "second")
    assert r2 > r1

    assert {:ok, %{value: "first", revision: ^r1, receipt: rc1}} =
             Queue.dequeue(queue, 1_000, visibility_timeout: 600)

    # Claimed values are skipped, not removed.
    assert {:ok, %{value: "second", receipt: rc2}} =
             Queue.dequeue(queue, 1_000, visibility_timeout: 10_000)

    assert {:ok, 2} = Queue.count(queue)
    assert :ok = Queue.ack(queue, rc2)
    assert {:error, :expired} = Queue.ack(queue, rc2)
    {:ok, _, _r3} = Queue.enqueue(queue, "third")

    # "first" was never acked: once the leader expired its claim's lease
    # it is handed out again, ahead of the newer "third".
    {:receipt, _, lease} = rc1

    Synod.Test.Wait.until(fn ->
      {:ok, leases} = Synod.Store.leases(ctx.store)
      not List.keymember?(leases, lease, 0)
    end)

    assert {:ok, %{value: "first", revision: ^r1, receipt: rc1b}} =
             Queue.dequeue(queue, 10_000, visibility_timeout: 10_000)

    assert rc1b != rc1
    assert {:error, :expired} = Queue.ack(queue, rc1)
    assert :ok = Queue.ack(queue, rc1b)
    assert {:ok, %{value: "third", receipt: nil}} = Queue.dequeue(queue, 1_000)
    assert {:error, :empty} = Queue.dequeue(queue, 0)
  end

  test "a value with a TTL leaves the queue when its lease expires; bad arguments raise", ctx do
    queue = {ctx.store, "ttl"}
    {:ok, _, _} = Queue.enqueue(queue, "short", 300)
    {:ok, _, _} = Queue.enqueue(queue, "kept")
    assert {:ok, 2} = Queue.count(queue)
    Synod.Test.Wait.until(fn -> Queue.count(queue) == {:ok, 1} end)
    assert {:ok, %{value: "kept"}} = Queue.dequeue(queue, 0)

    assert_raise ArgumentError, fn -> Queue.enqueue({ctx.store, ""}, "x") end
    assert_raise ArgumentError, fn -> Queue.enqueue({"store", "q"}, "x") end
    assert_raise ArgumentError, fn -> Queue.enqueue(queue, :not_binary) end
    assert_raise ArgumentError, fn -> Queue.enqueue(queue, "x", 0) end
    assert_raise ArgumentError, fn -> Queue.dequeue(queue, -1) end
    assert_raise ArgumentError, fn -> Queue.dequeue(queue, 0, visibility: 5) end
    assert_raise ArgumentError, fn -> Queue.dequeue(queue, 0, visibility_timeout: 0) end
    assert_raise ArgumentError, fn -> Queue.ack(queue, :nope) end
  end
end
