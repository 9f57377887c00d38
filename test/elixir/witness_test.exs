defmodule Synod.WitnessTest do
  # A Raft group of 2 BEAM members + 1 C witness (priv/synod_cnode with
  # --witness), on real processes: real peers, the real C node, real files.
  # kill -9 of either BEAM node: the other leads (or keeps leading) and
  # commits; kill -9 of the witness: the group goes on, and the witness
  # restarted from its files catches up (proved by then killing a BEAM
  # follower: the leader can only commit with the witness's acks). Every
  # leader-watch event of every test is checked (never two leaders in one
  # term, and the witness never leads).
  use ExUnit.Case, async: false

  alias Synod.{CNode, Raft}
  alias Synod.Test.{Cluster, Wait}
  alias Synod.Test.Raft, as: R

  @moduletag timeout: 180_000
  @moduletag :capture_log

  setup do
    [a, b] = Cluster.peers!(2, prefix: "wit")
    dir = Cluster.tmp_dir!("witness")
    group = :"wg#{System.unique_integer([:positive])}"
    w = :"synod_w#{System.unique_integer([:positive])}@127.0.0.1"
    wdir = Path.join(dir, "witness")
    File.mkdir_p!(dir)
    ctx = %{a: a, b: b, dir: dir, group: group, w: w, wdir: wdir}
    {:ok, Map.put(ctx, :wpid, start_witness(ctx))}
  end

  defp start_witness(ctx) do
    spec =
      Supervisor.child_spec(
        {CNode, name: ctx.w, witness: [ctx.group], data_dir: ctx.wdir, log_level: :info},
        id: {:witness, System.unique_integer()},
        restart: :temporary
      )

    start_supervised!(spec)
  end

  defp start_group(ctx) do
    :ok =
      Raft.start_group(ctx.group, [ctx.a, ctx.b], ctx.dir,
        machine: Synod.Raft.KV,
        witnesses: [ctx.w]
      )

    leader = R.wait_leader(ctx.group, [ctx.a, ctx.b], 20_000)
    :ok = R.watch_all(ctx.group, [ctx.a, ctx.b])
    leader
  end

  defp kill9(node) do
    os_pid = :erpc.call(node, :os, :getpid, [])
    Node.monitor(node, true)
    System.cmd("kill", ["-9", to_string(os_pid)])

    receive do
      {:nodedown, ^node} -> :ok
    after
      10_000 -> flunk("#{node} did not go down")
    end
  end

  defp kill9_witness(wpid) do
    Process.unlink(wpid)
    ref = Process.monitor(wpid)
    System.cmd("kill", ["-9", to_string(CNode.os_pid(wpid))])
    assert_receive {:DOWN, ^ref, _, _, _}, 10_000
  end

  defp other(ctx, n), do: if(n == ctx.a, do: ctx.b, else: ctx.a)

  # The leader as `node` sees it, once it is `node` itself or the other BEAM node.
  # The leader `node` names once it names itself: right after a kill -9 it
  # may still name the dead leader until it sees the node go down. Returns
  # the last leader it named if it never names itself in time.
  defp wait_own_leader(group, node, timeout \\ 20_000) do
    deadline = System.monotonic_time(:millisecond) + timeout

    Stream.repeatedly(fn -> :erpc.call(node, Raft, :leader, [group]) end)
    |> Enum.reduce_while(nil, fn leader, _ ->
      if leader == node or System.monotonic_time(:millisecond) > deadline,
        do: {:halt, leader},
        else: Process.sleep(20) && {:cont, leader}
    end)
  end

  defp check_events!(ctx) do
    events = R.drain_events()
    R.check_events(events)

    for {_n, _e, before, after_} <- events, s <- [before, after_] do
      assert s.leader != ctx.w, "the witness was reported as leader: #{inspect(s)}"
    end

    events
  end

  test "status shows the witness as a member of kind witness; it votes and acks", ctx do
    leader = start_group(ctx)
    assert {:ok, nil} = R.command(leader, ctx.group, {:put, :k, 1})
    st = R.status(leader, ctx.group)
    assert %{node: ctx.w, kind: :witness} in st.members
    assert %{node: other(ctx, leader), kind: :voter} in st.members
    assert length(st.voters) == 3

    assert {:error, {:witness, _}} =
             :erpc.call(leader, Raft, :transfer_leader, [ctx.group, ctx.w])

    check_events!(ctx)
  end

  for victim <- [:leader, :follower] do
    test "kill -9 of the BEAM #{victim}: the other BEAM member leads and commits with the witness",
         ctx do
      leader = start_group(ctx)
      for i <- 1..20, do: assert({:ok, _} = R.command(leader, ctx.group, {:put, i, i}))
      # quiet: the follower holds the whole log before the kill
      R.wait_converged(ctx.group, [ctx.a, ctx.b])
      dead = if unquote(victim) == :leader, do: leader, else: other(ctx, leader)
      alive = other(ctx, dead)
      kill9(dead)
      assert wait_own_leader(ctx.group, alive) == alive
      assert {:ok, 20} = R.command(alive, ctx.group, {:put, 20, :after}, 10_000)
      assert {:ok, nil} = R.command(alive, ctx.group, {:put, :new, 1}, 10_000)
      assert R.local_state(alive, ctx.group)[:new] == 1
      check_events!(ctx)
    end
  end

  test "kill -9 of the witness: the group goes on; restarted from its files it catches up",
       ctx do
    leader = start_group(ctx)
    for i <- 1..10, do: assert({:ok, _} = R.command(leader, ctx.group, {:put, i, i}))
    kill9_witness(ctx.wpid)
    for i <- 11..40, do: assert({:ok, _} = R.command(leader, ctx.group, {:put, i, i}))
    assert File.exists?(Path.join(ctx.wdir, "#{ctx.group}.wal"))
    _wpid = start_witness(ctx)
    # Caught up: once the follower is gone, the leader commits only with the
    # witness's acknowledgements, which it gives only for a log that matches.
    Process.sleep(500)
    follower = other(ctx, leader)
    kill9(follower)
    assert {:ok, 40} = R.command(leader, ctx.group, {:put, 40, :with_witness}, 15_000)
    st = R.status(leader, ctx.group)
    assert st.commit >= 42
    check_events!(ctx)
  end

  test "Synod.Store runs unchanged on 2 BEAM members + 1 witness and survives kill -9 of its leader",
       ctx do
    store = ctx.group
    voters = [ctx.a, ctx.b, ctx.w]

    for n <- [ctx.a, ctx.b] do
      opts = [
        name: store,
        voters: voters,
        witnesses: [ctx.w],
        data_dir: Path.join(ctx.dir, "#{n}")
      ]

      assert {:ok, _} = :erpc.call(n, Synod.Store, :start_member, [opts])
    end

    leader = R.wait_leader(store, [ctx.a, ctx.b], 20_000)
    :ok = R.watch_all(store, [ctx.a, ctx.b])

    for i <- 1..10 do
      assert {:ok, _, nil} = :erpc.call(leader, Synod.Store, :put, [store, "k#{i}", "v#{i}"])
    end

    alive = other(ctx, leader)
    target = R.status(leader, store).commit
    Wait.until(fn -> R.status(alive, store).applied >= target end, 10_000)
    kill9(leader)
    assert wait_own_leader(store, alive) == alive

    assert {:ok, _, _} =
             :erpc.call(alive, Synod.Store, :put, [store, "after", "kill", [timeout: 10_000]])

    assert {:ok, %{value: "v3"}} = :erpc.call(alive, Synod.Store, :get, [store, "k3"])
    assert {:ok, %{value: "kill"}} = :erpc.call(alive, Synod.Store, :get, [store, "after"])
    check_events!(ctx)
  end

  test "partition {witness, one BEAM node} against the other: the pair leads and commits, the lone node cannot",
       ctx do
    leader = start_group(ctx)
    for i <- 1..10, do: assert({:ok, _} = R.command(leader, ctx.group, {:put, i, i}))
    R.wait_converged(ctx.group, [ctx.a, ctx.b])
    # Either side of the cut may hold the old leader: try both in turn.
    lone = Enum.random([ctx.a, ctx.b])
    pair = other(ctx, lone)
    Synod.LocalCluster.partition([pair], [lone])
    cookie = Node.get_cookie()
    w = ctx.w

    true = :erpc.call(lone, :erlang, :set_cookie, [w, :synod_cut_w])
    :erpc.call(lone, :erlang, :disconnect_node, [w])

    assert Wait.until(fn -> :erpc.call(pair, Raft, :leader?, [ctx.group]) end, 20_000)
    assert {:ok, _} = R.command(pair, ctx.group, {:put, :cut, :pair}, 10_000)

    assert {:error, _} =
             :erpc.call(lone, Raft, :command, [ctx.group, {:put, :cut, :lone}, [timeout: 1_000]])

    true = :erpc.call(lone, :erlang, :set_cookie, [w, cookie])
    Synod.LocalCluster.heal([pair], [lone])
    R.wait_converged(ctx.group, [ctx.a, ctx.b], 20_000)
    assert R.local_state(lone, ctx.group)[:cut] == :pair
    check_events!(ctx)
  end

  test "a witness is added to a running group (learner, then voter) and removed again", ctx do
    # a 2-voter group first (the setup's witness is not in it yet)
    :ok = Raft.start_group(ctx.group, [ctx.a, ctx.b], ctx.dir, machine: Synod.Raft.KV)
    leader = R.wait_leader(ctx.group, [ctx.a, ctx.b], 20_000)
    :ok = R.watch_all(ctx.group, [ctx.a, ctx.b])
    for i <- 1..10, do: assert({:ok, _} = R.command(leader, ctx.group, {:put, i, i}))
    assert :ok = :erpc.call(leader, Raft, :add_member, [ctx.group, ctx.w, [timeout: 15_000]])
    st = R.status(leader, ctx.group)
    assert ctx.w in st.voter_nodes
    assert length(st.voters) == 3
    assert {:ok, 10} = R.command(leader, ctx.group, {:put, 10, :with_witness}, 15_000)
    assert :ok = :erpc.call(leader, Raft, :remove_member, [ctx.group, ctx.w, [timeout: 15_000]])
    refute ctx.w in R.status(leader, ctx.group).voter_nodes
    assert {:ok, _} = R.command(leader, ctx.group, {:put, :after, :removed}, 15_000)
    # removed for real: with the other BEAM node gone, nothing commits
    kill9(other(ctx, leader))

    assert {:error, _} =
             :erpc.call(leader, Raft, :command, [ctx.group, {:put, :x, 1}, [timeout: 2_000]])

    check_events!(ctx)
  end

  defp restart_member(ctx, node, opts) do
    :ok = :erpc.call(node, Raft, :stop_member, [ctx.group])
    data_dir = Path.join(ctx.dir, Atom.to_string(node))

    {:ok, _} =
      :erpc.call(node, Raft, :start_member, [
        [name: ctx.group, voters: [ctx.a, ctx.b], data_dir: data_dir] ++ opts
      ])
  end

  defp assert_witness_everywhere(ctx, w) do
    for n <- [ctx.a, ctx.b] do
      st = R.status(n, ctx.group)
      assert %{node: w, kind: :witness} in st.members, "#{n}: #{inspect(st.members)}"
      assert w in st.witness_nodes
      assert {:error, {:witness, ^w}} = :erpc.call(n, Raft, :transfer_leader, [ctx.group, w])
    end
  end

  test "the kind is group state: a witness added with kind: :witness shows as one on every member, after a restart from a snapshot",
       ctx do
    # no :witnesses option anywhere: the kind can only come from the group
    opts = [machine: Synod.Raft.KV, snapshot_every: 5]
    :ok = Raft.start_group(ctx.group, [ctx.a, ctx.b], ctx.dir, opts)
    leader = R.wait_leader(ctx.group, [ctx.a, ctx.b], 20_000)
    :ok = R.watch_all(ctx.group, [ctx.a, ctx.b])

    assert {:error, {:bad_option, :kind, :arbiter}} =
             :erpc.call(leader, Raft, :add_member, [ctx.group, ctx.w, [kind: :arbiter]])

    assert :ok =
             :erpc.call(leader, Raft, :add_member, [
               ctx.group,
               ctx.w,
               [kind: :witness, timeout: 15_000]
             ])

    R.wait_converged(ctx.group, [ctx.a, ctx.b], 20_000)
    assert_witness_everywhere(ctx, ctx.w)

    # a leader change between the BEAM members: the watch views name it
    follower = other(ctx, leader)
    assert :ok = :erpc.call(leader, Raft, :transfer_leader, [ctx.group, follower])
    Wait.until(fn -> :erpc.call(follower, Raft, :leader, [ctx.group]) == follower end, 20_000)
    events = check_events!(ctx)

    assert Enum.any?(events, fn {_n, _e, _b, after_} -> after_.witnesses == [ctx.w] end),
           inspect(events)

    # enough commands for a snapshot past the witness entry, then a restart
    for i <- 1..12, do: assert({:ok, _} = R.command(follower, ctx.group, {:put, i, i}, 15_000))
    restarted = leader
    assert R.status(restarted, ctx.group).snapshot_index > 0
    restart_member(ctx, restarted, opts)
    R.wait_converged(ctx.group, [ctx.a, ctx.b], 20_000)
    assert_witness_everywhere(ctx, ctx.w)

    # and the witness still votes and acks: with the other BEAM node gone,
    # the restarted one commits with the witness alone
    kill9(follower)
    Wait.until(fn -> :erpc.call(restarted, Raft, :leader, [ctx.group]) == restarted end, 20_000)

    assert {:ok, _} = R.command(restarted, ctx.group, {:put, :alone, 1}, 15_000)
    assert %{node: ctx.w, kind: :witness} in R.status(restarted, ctx.group).members
    check_events!(ctx)
  end

  test "bootstrap witnesses are recorded by the leader: a restart without the :witnesses option still knows them",
       ctx do
    leader = start_group(ctx)
    assert {:ok, _} = R.command(leader, ctx.group, {:put, :k, 1})
    follower = other(ctx, leader)
    R.wait_converged(ctx.group, [ctx.a, ctx.b], 20_000)
    restart_member(ctx, follower, machine: Synod.Raft.KV)
    R.wait_converged(ctx.group, [ctx.a, ctx.b], 20_000)
    assert_witness_everywhere(ctx, ctx.w)
    check_events!(ctx)
  end

  test "replace_member swaps the witness for another in one call; the new one acks", ctx do
    leader = start_group(ctx)
    for i <- 1..10, do: assert({:ok, _} = R.command(leader, ctx.group, {:put, i, i}))
    w2 = :"synod_w#{System.unique_integer([:positive])}@127.0.0.1"
    _ = start_witness(%{ctx | w: w2, wdir: Path.join(ctx.dir, "witness2")})

    assert {:error, {:same_member, _}} =
             :erpc.call(leader, Raft, :replace_member, [ctx.group, ctx.w, ctx.w, []])

    assert {:error, {:not_member, :nobody@nowhere}} =
             :erpc.call(leader, Raft, :replace_member, [ctx.group, :nobody@nowhere, w2, []])

    # a new member that never catches up (no such node): the add fails, the
    # old witness stays a voter, the new one is at most a learner
    ghost = :"ghost#{System.unique_integer([:positive])}@127.0.0.1"

    assert {:error, {:add, _}} =
             :erpc.call(leader, Raft, :replace_member, [
               ctx.group,
               ctx.w,
               ghost,
               [kind: :witness, timeout: 1_500]
             ])

    st = R.status(leader, ctx.group)
    assert ctx.w in st.voter_nodes
    refute ghost in st.voter_nodes
    assert :ok = :erpc.call(leader, Raft, :remove_member, [ctx.group, ghost, [timeout: 10_000]])
    refute ghost in R.status(leader, ctx.group).learner_nodes

    assert :ok =
             :erpc.call(leader, Raft, :replace_member, [
               ctx.group,
               ctx.w,
               w2,
               [kind: :witness, timeout: 20_000]
             ])

    st = R.status(leader, ctx.group)
    assert w2 in st.voter_nodes
    refute ctx.w in st.voter_nodes
    refute ctx.w in st.learner_nodes
    assert length(st.voters) == 3
    R.wait_converged(ctx.group, [ctx.a, ctx.b], 20_000)
    assert_witness_everywhere(ctx, w2)

    # the old witness can go: the group commits with the new one's acks alone
    kill9_witness(ctx.wpid)
    kill9(other(ctx, leader))
    assert {:ok, _} = R.command(leader, ctx.group, {:put, :new_witness, 1}, 15_000)
    check_events!(ctx)
  end

  @tag :valgrind
  test "the witness under valgrind: no errors, no leaks, through votes, appends and a clean stop",
       ctx do
    # the setup's witness is not used: a second one under valgrind, on its own dir
    kill9_witness(ctx.wpid)
    File.rm_rf!(ctx.wdir)

    spec =
      Supervisor.child_spec(
        {CNode,
         name: ctx.w,
         witness: [ctx.group],
         data_dir: ctx.wdir,
         ready_timeout: 60_000,
         wrapper: [
           "valgrind",
           "--leak-check=full",
           "--errors-for-leak-kinds=definite,indirect",
           "--error-exitcode=99"
         ]},
        id: :valgrind,
        restart: :temporary
      )

    vpid = start_supervised!(spec)
    Process.unlink(vpid)
    ref = Process.monitor(vpid)
    leader = start_group(ctx)
    for i <- 1..30, do: assert({:ok, _} = R.command(leader, ctx.group, {:put, i, i}, 15_000))
    # the witness must be acking: with the follower gone the leader still commits
    kill9(other(ctx, leader))
    assert {:ok, _} = R.command(leader, ctx.group, {:put, :v, 1}, 30_000)
    System.cmd("kill", ["-TERM", to_string(CNode.os_pid(vpid))])
    assert_receive {:DOWN, ^ref, _, _, reason}, 60_000
    assert reason == {:shutdown, {:cnode_exited, 0}}, inspect(reason)
    check_events!(ctx)
  end

  test "a second witness on the same data directory is refused (exit code 75)", ctx do
    spec =
      Supervisor.child_spec(
        {CNode,
         name: :"synod_w2_#{System.unique_integer([:positive])}@127.0.0.1",
         witness: [ctx.group],
         data_dir: ctx.wdir},
        id: :second,
        restart: :temporary
      )

    assert {:error, {{:cnode_exited, 75, output}, _}} = start_supervised(spec)
    assert Enum.any?(output, &(&1 =~ "held by another witness"))
  end
end
