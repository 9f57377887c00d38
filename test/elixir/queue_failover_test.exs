defmodule Synod.QueueFailoverTest do
  # Synod.Queue in acknowledged mode while the store's leader is killed
  # (kill -9 of its VM) in the middle of the stream: nothing acknowledged
  # is lost, nothing is acked twice.
  use ExUnit.Case, async: false

  alias Synod.Test.Queue, as: Q

  @moduletag timeout: 120_000

  setup do
    ctx = Q.start_store("qf")
    on_exit(fn -> Q.stop(ctx) end)
    ctx
  end

  test "a leader killed mid-stream loses nothing acknowledged (acknowledged mode)", ctx do
    queue = {ctx.store, "failover"}
    followers = ctx.nodes -- [ctx.leader]

    consumers =
      for n <- followers,
          do: Task.async(fn -> Q.on(n, :consume, [queue, 2_500, 1_000], 90_000) end)

    producers =
      for {n, i} <- Enum.with_index(followers),
          do: Task.async(fn -> Q.on(n, :produce, [queue, "f#{i}", 40, 10], 90_000) end)

    Process.sleep(300)
    assert Enum.all?(producers, &(Task.yield(&1, 0) == nil)), "the stream ended before the kill"
    Synod.LocalCluster.kill(ctx.leader)

    {acknowledged, unknown} =
      producers
      |> Task.await_many(90_000)
      |> Enum.reduce({[], []}, fn {ok, failed}, {a, u} -> {a ++ ok, u ++ failed} end)

    results = Task.await_many(consumers, 90_000)
    acked = results |> Enum.flat_map(& &1.items) |> Enum.map(& &1.value)
    # An ack whose outcome is unknown (the store did not answer) may have
    # deleted its value; a :lease_expired one did not.
    maybe_acked = for %{failed: f} <- results, {v, e} <- f, e != :lease_expired, do: v
    acknowledged = Enum.map(acknowledged, &elem(&1, 0))

    # Every enqueue that was acknowledged was consumed and acked; nothing
    # was acked twice; nothing came from nowhere.
    assert acknowledged -- (acked ++ maybe_acked) == []
    assert length(Enum.uniq(acked)) == length(acked)
    assert acked -- (acknowledged ++ unknown) == []
    assert length(acknowledged) >= 40
  end
end
