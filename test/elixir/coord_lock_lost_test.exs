defmodule Synod.CoordLockLostTest do
  # The lock contract when the holder loses its lease while `fun` runs: the
  # holder is cut off from the store past its TTL, another contender is
  # granted the lock, and `lock/5` must answer `{:error, {:lock_lost, result}}`
  # however the release goes afterwards (the store reachable again before
  # `fun` returns, reachable only during the release's retries, or not at all).
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.Coord

  @moduletag timeout: 120_000
  @moduletag capture_log: true
  @ttl 1_000

  setup do
    ctx = Synod.Test.Queue.start_store("ll")
    on_exit(fn -> Synod.Test.Queue.stop(ctx) end)
    [f1, f2] = ctx.nodes -- [ctx.leader]
    {:ok, store: ctx.store, leader: ctx.leader, f1: f1, f2: f2}
  end

  # The holder, on f1, is cut off from both other nodes while it holds the
  # lock; the contender on f2 is granted the lock once the holder's lease
  # expired on the store's leader. Returns the holder's pid and both tokens.
  defp lose_lock(%{store: s, leader: leader, f1: f1, f2: f2}, key, holder_opts) do
    holder = :erpc.call(f1, Coord, :spawn_holder, [s, key, @ttl, self(), holder_opts])
    assert_receive {:holding, ^holder, token}, 10_000
    contender = :erpc.call(f2, Coord, :spawn_holder, [s, key, @ttl, self()])

    LocalCluster.partition([f1], [leader, f2])
    assert_receive {:holding, ^contender, later}, 20_000
    assert later > token
    {holder, contender}
  end

  test "healed before fun returns: {:error, {:lock_lost, result}}", ctx do
    {holder, contender} = lose_lock(ctx, "ll/healed", [])
    LocalCluster.heal([ctx.f1], [ctx.leader, ctx.f2])
    send(holder, :return)
    assert_receive {:lock_result, ^holder, result}, 30_000
    assert result == {:error, {:lock_lost, :done}}
    send(contender, :return)
    assert_receive {:lock_result, ^contender, {:ok, :done}}, 30_000
  end

  test "healed while the release is retried: {:error, {:lock_lost, result}}", ctx do
    {holder, contender} = lose_lock(ctx, "ll/retried", call_timeout: 1_000)
    # The first release attempt times out cut off; a retry reaches the store.
    send(holder, :return)
    Process.sleep(1_300)
    LocalCluster.heal([ctx.f1], [ctx.leader, ctx.f2])
    assert_receive {:lock_result, ^holder, result}, 30_000
    assert result == {:error, {:lock_lost, :done}}
    send(contender, :return)
    assert_receive {:lock_result, ^contender, {:ok, :done}}, 30_000
  end

  test "still cut off when fun returns: {:error, {:lock_lost, result}}", ctx do
    {holder, _contender} = lose_lock(ctx, "ll/cut", call_timeout: 300)
    send(holder, :return)
    assert_receive {:lock_result, ^holder, result}, 30_000
    assert result == {:error, {:lock_lost, :done}}
  end
end
