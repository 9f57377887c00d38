defmodule Synod.RaftClusterTest do
  # The Raft driver on real peers: elections, failover after a VM is killed,
  # restarts from disk, partitions, membership changes. Every test collects
  # the leader-watch events of every member and checks them (never two
  # leaders in one term, see Synod.Test.Raft.check_events/1).
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.{Cluster, Raft, Wait}

  @moduletag timeout: 120_000

  setup context do
    dir = Cluster.tmp_dir!("raft")
    group = :"g#{System.unique_integer([:positive])}"
    {:ok, dir: dir, group: group, name: context.test}
  end

  for voters <- [3, 5] do
    test "#{voters} voters elect one leader, and a new one when the leader's VM is killed", ctx do
      nodes = Cluster.peers!(unquote(voters), prefix: "rv")
      leader = Raft.start_group(ctx.group, nodes, ctx.dir)
      Raft.watch_all(ctx.group, nodes)

      assert Enum.count(nodes, &:erpc.call(&1, Synod.Raft, :leader?, [ctx.group])) == 1
      assert {:ok, nil} = Raft.command(hd(nodes), ctx.group, {:put, :k, 1})
      old_term = :erpc.call(leader, Synod.Raft, :term, [ctx.group])

      LocalCluster.kill(leader)
      survivors = nodes -- [leader]
      new_leader = Raft.wait_leader(ctx.group, survivors)
      assert new_leader != leader
      assert :erpc.call(new_leader, Synod.Raft, :term, [ctx.group]) > old_term

      # Nothing acknowledged is lost, and the group goes on.
      assert {:ok, 2} = Raft.command(hd(survivors), ctx.group, {:incr, :k, 1})
      Raft.wait_converged(ctx.group, survivors)

      # Every survivor's watch saw the old leader go and the new one come,
      # with the states before and after each change.
      Process.sleep(100)
      events = Raft.check_events(Raft.drain_events())

      for n <- survivors do
        mine = for {^n, e, b, a} <- events, do: {e, b, a}

        assert Enum.any?(mine, fn {_, b, a} -> b.leader == leader and a.leader != leader end),
               "#{n} never saw #{leader} go: #{inspect(mine)}"

        assert {_, _, %{leader: ^new_leader}} = List.last(mine)
      end

      assert {^new_leader, :become_leader, %{role: :candidate}, %{role: :leader}} =
               Enum.find(Enum.reverse(events), &match?({_, :become_leader, _, _}, &1))
    end
  end

  test "a member restarted from disk recovers, catches up through a snapshot, and keeps its vote",
       ctx do
    names = for i <- 1..3, do: "rr#{i}-#{System.unique_integer([:positive])}"
    nodes = Cluster.peers!(3, names: names)
    leader = Raft.start_group(ctx.group, nodes, ctx.dir, snapshot_every: 20)
    Raft.watch_all(ctx.group, nodes)
    for i <- 1..30, do: {:ok, _} = Raft.command(leader, ctx.group, {:put, i, i})

    [victim | _] = nodes -- [leader]
    victim_index = Enum.find_index(nodes, &(&1 == victim))
    before = Raft.status(victim, ctx.group)
    LocalCluster.kill(victim)

    # The group goes on without it, past another snapshot.
    for i <- 31..80, do: {:ok, _} = Raft.command(leader, ctx.group, {:put, i, i})
    # The leader compacted past everything the victim had: it must be sent a snapshot.
    assert Raft.status(leader, ctx.group).first_index > before.last_index + 1

    # Same node name, same directory.
    [^victim] = Cluster.peers!(1, names: [Enum.at(names, victim_index)])
    data_dir = Path.join(ctx.dir, Atom.to_string(victim))

    {:ok, _} =
      :erpc.call(victim, Synod.Raft, :start_member, [
        [
          name: ctx.group,
          voters: nodes,
          data_dir: data_dir,
          machine: Synod.Raft.KV,
          snapshot_every: 20
        ]
      ])

    after_ = Raft.status(victim, ctx.group)
    # Recovered from its own files: at least the term it had, and in that
    # term the same vote (a vote is on disk before it is sent).
    assert after_.term >= before.term
    if after_.term == before.term, do: assert(after_.vote == before.vote)
    assert after_.applied >= 20

    Raft.wait_converged(ctx.group, nodes)
    assert Map.new(1..80, &{&1, &1}) == Raft.local_state(victim, ctx.group)
    Raft.check_events(Raft.drain_events())
  end

  test "the whole group stopped and started again keeps its state", ctx do
    nodes = Cluster.peers!(3, prefix: "rf")
    leader = Raft.start_group(ctx.group, nodes, ctx.dir, snapshot_every: 15)
    for i <- 1..40, do: {:ok, _} = Raft.command(leader, ctx.group, {:incr, :n, i})

    for n <- nodes, do: :ok = :erpc.call(n, Synod.Raft, :stop_member, [ctx.group])
    :ok = Synod.Raft.start_group(ctx.group, nodes, ctx.dir, machine: Synod.Raft.KV)
    leader = Raft.wait_leader(ctx.group, nodes)

    assert {:ok, 821} = Raft.command(leader, ctx.group, {:incr, :n, 1})
    Raft.wait_converged(ctx.group, nodes)
  end

  test "a partitioned minority cannot commit; the majority goes on; logs converge after healing",
       ctx do
    nodes = Cluster.peers!(3, prefix: "rp")
    old = Raft.start_group(ctx.group, nodes, ctx.dir)
    Raft.watch_all(ctx.group, nodes)
    {:ok, _} = Raft.command(old, ctx.group, {:put, :k, :before})
    majority = nodes -- [old]

    LocalCluster.partition([old], majority)
    # The old leader, alone, cannot commit (check-quorum also makes it step down).
    assert {:error, _} = Raft.command(old, ctx.group, {:put, :k, :minority}, 1_500)
    new = Raft.wait_leader(ctx.group, majority)
    assert {:ok, :before} = Raft.command(new, ctx.group, {:put, :k, :majority})
    Wait.until(fn -> not :erpc.call(old, Synod.Raft, :leader?, [ctx.group]) end)

    LocalCluster.heal([old], majority)
    Raft.wait_converged(ctx.group, nodes)
    assert %{k: :majority} = Raft.local_state(old, ctx.group)
    assert Raft.wait_leader(ctx.group, nodes) in majority
    Raft.check_events(Raft.drain_events())
  end

  test "members are added (as learners, then voters) and removed at runtime", ctx do
    nodes = Cluster.peers!(4, prefix: "rm")
    [a, b, c, d] = nodes
    leader = Raft.start_group(ctx.group, [a, b, c], ctx.dir)
    for i <- 1..10, do: {:ok, _} = Raft.command(leader, ctx.group, {:put, i, i})

    {:ok, _} =
      :erpc.call(d, Synod.Raft, :start_member, [
        [name: ctx.group, join: true, data_dir: Path.join(ctx.dir, "d"), machine: Synod.Raft.KV]
      ])

    assert :ok = :erpc.call(a, Synod.Raft, :add_member, [ctx.group, d, [timeout: 10_000]])
    Raft.wait_converged(ctx.group, nodes)
    assert d in Raft.status(leader, ctx.group).voter_nodes

    removed = Enum.find([a, b, c], &(&1 != leader))
    assert :ok = :erpc.call(leader, Synod.Raft, :remove_member, [ctx.group, removed])
    refute removed in Raft.status(leader, ctx.group).voter_nodes
    assert {:ok, _} = Raft.command(d, ctx.group, {:put, :after, :removal})
    Raft.wait_converged(ctx.group, nodes -- [removed])
  end
end
