defmodule Synod.RaftQuiesceTest do
  # Idle groups quiesce (docs/raft.md, "Quiescing idle groups"), on real
  # peers with real files: once a group is idle its members receive no
  # message from a member, not even their own tick timer's; a command wakes it
  # and commits; killing the leader's node still fails over through the
  # nodedown path (with an election timeout far longer than the test's
  # waits, so no other path could elect), and a leader's member stopped on a
  # node that stays up through the followers' monitor of it; and with `quiesce: false` the
  # heartbeats and ticks go on (the test can fail).
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.{Cluster, Raft, Wait}

  @moduletag timeout: 120_000

  setup do
    {:ok, dir: Cluster.tmp_dir!("quiesce"), group: :"q#{System.unique_integer([:positive])}"}
  end

  # The cores quiesced and the members' tick timers stopped (a tick already
  # scheduled when a follower quiesces still comes, once).
  defp quiesced?(group, nodes) do
    Enum.all?(nodes, fn node ->
      st = :erpc.call(node, Synod.Raft, :status, [group])
      st.quiesced and not st.tick_timer
    end)
  end

  defp receives(group, nodes, ms) do
    nodes
    |> Enum.map(&Task.async(fn -> :erpc.call(&1, Raft, :member_receives, [group, ms]) end))
    |> Task.await_many(ms + 10_000)
  end

  test "an idle group quiesces, a write wakes it, and a killed leader fails over on nodedown",
       ctx do
    nodes = Cluster.peers!(3, prefix: "qz")
    # election timeouts of 10-20 s: only the nodedown path elects in time
    leader = Raft.start_group(ctx.group, nodes, ctx.dir, election_tick: 400)
    Raft.watch_all(ctx.group, nodes)
    assert {:ok, nil} = Raft.command(leader, ctx.group, {:put, :k, 1})

    Wait.until(fn -> quiesced?(ctx.group, nodes) end)

    # (other messages, such as the nodeups of other tests' peers, may come)
    for counts <- receives(ctx.group, nodes, 1_000), do: assert(%{raft: 0, tick: 0} = counts)

    # A write to the quiesced group, from a follower's node: routed, woken,
    # committed everywhere; then quiet again.
    follower = hd(nodes -- [leader])
    assert {:ok, 1} = Raft.command(follower, ctx.group, {:put, :k, 2})
    Raft.wait_converged(ctx.group, nodes)
    assert %{k: 2} = Raft.local_state(follower, ctx.group)
    Wait.until(fn -> quiesced?(ctx.group, nodes) end)

    LocalCluster.kill(leader)
    survivors = nodes -- [leader]
    new = Raft.wait_leader(ctx.group, survivors, 5_000)
    assert new != leader
    assert {:ok, 3} = Raft.command(hd(survivors), ctx.group, {:incr, :k, 1})
    Raft.wait_converged(ctx.group, survivors)
    Wait.until(fn -> quiesced?(ctx.group, survivors) end)
    Raft.check_events(Raft.drain_events())
  end

  test "a quiesced group whose leader's member stops on a node that stays up elects another",
       ctx do
    nodes = Cluster.peers!(3, prefix: "qs")
    # election timeouts of 10-20 s, and no nodedown: only the followers'
    # monitor of the leader's member elects in time
    leader = Raft.start_group(ctx.group, nodes, ctx.dir, election_tick: 400)
    assert {:ok, nil} = Raft.command(leader, ctx.group, {:put, :k, 1})
    Wait.until(fn -> quiesced?(ctx.group, nodes) end)

    :ok = :erpc.call(leader, Synod.Raft, :stop_member, [ctx.group])
    survivors = nodes -- [leader]
    new = Raft.wait_leader(ctx.group, survivors, 5_000)
    assert new != leader
    assert {:ok, 1} = Raft.command(hd(survivors), ctx.group, {:put, :k, 2})
    Raft.wait_converged(ctx.group, survivors)
  end

  test "with quiesce: false an idle group keeps ticking and heartbeating", ctx do
    nodes = Cluster.peers!(3, prefix: "qn")
    leader = Raft.start_group(ctx.group, nodes, ctx.dir, quiesce: false)
    assert {:ok, nil} = Raft.command(leader, ctx.group, {:put, :k, 1})
    Process.sleep(500)
    refute quiesced?(ctx.group, nodes)

    for counts <- receives(ctx.group, nodes, 500) do
      assert counts.tick > 0
      assert counts.raft > 0
    end
  end
end
