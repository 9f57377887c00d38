defmodule Synod.RaftCrashTest do
  # The persistence order under crashes, on real files: a member's VM is
  # killed with kill -9 between the steps of one Ready (after the early
  # sends and before the write and fsync; after the fsync and before the
  # other sends; after those sends and before apply), through the test-only
  # hook in Synod.Raft.Member (crash_point/3), on the leader and on a
  # follower, in a Ready that persists entries and in one that persists a
  # vote. After each kill the VM is restarted from its own directory. At the
  # end: every command that was acknowledged is applied on every member
  # (no committed entry lost), no member's files ever record two votes in
  # one term, terms on disk never go down, and the leader watches never saw
  # two leaders in one term.
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.Raft

  @moduletag timeout: 240_000

  setup do
    dir = Path.join(System.tmp_dir!(), "synod-raft-crash-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, dir: dir, group: :"gc#{System.unique_integer([:positive])}"}
  end

  @trials for kind <- [:entries, :vote],
              who <- [:leader, :follower],
              kind == :entries or who == :follower,
              step <- [:before_sync, :after_sync, :after_send],
              do: {kind, who, step}

  # Each case runs with the members' own log files (log: :files, the
  # default) and with the node's shared write-ahead log (log: :wal,
  # Synod.Raft.Wal), set on every peer (use_log/3); with
  # SYNOD_TEST_FSYNC_WRITER=1 also on their own files fsynced by a syncer
  # beside each member (`fsync_writer: true`, Synod.Raft.Syncer; about 20 s
  # more, so not in the default run).
  @logs [:files, :wal] ++
          if(System.get_env("SYNOD_TEST_FSYNC_WRITER") == "1", do: [:writer], else: [])
  for log <- @logs do
    test "kill -9 between each step of persist and send loses no committed entry, gives no vote twice#{%{files: "", wal: " (shared WAL)", writer: " (fsync_writer)"}[log]}",
         ctx do
      ctx = Map.put(ctx, :log, unquote(log))
      names = for i <- 1..3, do: "rk#{i}-#{System.unique_integer([:positive])}"
      # Every peer started, restarted ones too, for on_exit (another process).
      {:ok, started} = Agent.start(fn -> [] end)

      on_exit(fn ->
        LocalCluster.stop(Agent.get(started, & &1))
        Agent.stop(started)
      end)

      peers = LocalCluster.start(3, names: names)
      Agent.update(started, &(peers ++ &1))
      ctx = Map.put(ctx, :started, started)
      nodes = Enum.map(peers, &elem(&1, 1))
      use_log(nodes, ctx.log, ctx.dir)
      Raft.start_group(ctx.group, nodes, ctx.dir)
      Raft.watch_all(ctx.group, nodes)

      acked =
        Enum.reduce(@trials, [], fn {kind, who, step}, acked ->
          leader = Raft.wait_leader(ctx.group, nodes, 30_000)
          followers = nodes -- [leader]
          victim = if who == :leader, do: leader, else: hd(followers)
          arm = {ctx.group, step, kind}
          :ok = :erpc.call(victim, :persistent_term, :put, [{Synod.Raft.Member, :crash_at}, arm])
          acked = trigger(kind, ctx.group, victim, leader, nodes, acked)
          restart(victim, names, nodes, ctx)
          # The group goes on, with the victim back.
          acked = commands(ctx.group, nodes -- [victim], acked, 3)
          Raft.wait_converged(ctx.group, nodes, 30_000)
          acked
        end)

      Raft.wait_converged(ctx.group, nodes, 30_000)

      for n <- nodes do
        state = Raft.local_state(n, ctx.group)
        lost = Enum.reject(acked, fn i -> Map.get(state, i) == i end)
        assert lost == [], "#{n} lost acknowledged commands #{inspect(lost)}"
        Raft.check_votes(Path.join(ctx.dir, Atom.to_string(n)))
      end

      Raft.check_events(Raft.drain_events())
    end
  end

  # The case that needs the order: a follower's answer is the only copy the
  # leader counts besides its own. Had the answer left before the entry was
  # on the follower's disk, killing the follower (losing the entry) and then
  # the leader would leave no copy of a committed, acknowledged command. The
  # follower dies at each step of the Ready that persists the entry; when
  # the command was acknowledged, it must survive. (Sending the driver's
  # late messages before the persist makes the :before_sync case fail.)
  # Files only: a WAL member does not wait for its write, the core holds
  # the answer until the WAL's notice comes back in a later Ready, so at
  # none of these steps has an answer left and the case would check
  # nothing. The WAL's rule is tested in test/c/test_raft_async.c and, with
  # kill -9 mid-write, in raft_wal_crash_test.exs.
  for step <- [:before_sync, :after_sync, :after_send] do
    test "an entry acknowledged by a follower killed #{step} survives the leader's death",
         ctx do
      ctx = Map.put(ctx, :log, :files)
      {:ok, started} = Agent.start(fn -> [] end)

      on_exit(fn ->
        LocalCluster.stop(Agent.get(started, & &1))
        Agent.stop(started)
      end)

      names = for i <- 1..3, do: "rf#{i}-#{System.unique_integer([:positive])}"
      peers = LocalCluster.start(3, names: names)
      Agent.update(started, &(peers ++ &1))
      ctx = Map.put(ctx, :started, started)
      nodes = Enum.map(peers, &elem(&1, 1))
      use_log(nodes, ctx.log, ctx.dir)
      leader = Raft.start_group(ctx.group, nodes, ctx.dir)
      [a, b] = nodes -- [leader]
      assert {:ok, _} = Raft.command(leader, ctx.group, {:put, :before, 1})
      Raft.wait_converged(ctx.group, nodes)

      # b hears nothing of the next entry; a persists it and dies.
      LocalCluster.partition([b], [leader, a])
      arm = {ctx.group, unquote(step), :entries}
      :ok = :erpc.call(a, :persistent_term, :put, [{Synod.Raft.Member, :crash_at}, arm])
      acked = match?({:ok, _}, Raft.command(leader, ctx.group, {:put, :acked, 1}, 3_000))
      wait_down(a)
      LocalCluster.kill(leader)
      wait_down(leader)
      # Undo the cut on b's side (a comes back as a fresh VM).
      :erpc.call(b, :erlang, :set_cookie, [a, Node.get_cookie()])
      restart(a, names, nodes, ctx)
      new_leader = Raft.wait_leader(ctx.group, [a, b], 30_000)
      assert {:ok, _} = Raft.command(new_leader, ctx.group, {:put, :after, 1}, 10_000)
      Raft.wait_converged(ctx.group, [a, b], 30_000)
      state = Raft.local_state(b, ctx.group)
      assert %{before: 1, after: 1} = state
      if acked, do: assert(state[:acked] == 1, "an acknowledged command was lost")
      # With the answer after the fsync, the command commits exactly when a
      # got to send it.
      assert acked == (unquote(step) == :after_send)
    end
  end

  defp wait_down(node, tries \\ 500) do
    cond do
      node not in Node.list() -> :ok
      tries == 0 -> flunk("#{node} is still up")
      true -> Process.sleep(20) && wait_down(node, tries - 1)
    end
  end

  # Makes the victim persist entries (commands from the other nodes) or a
  # vote (a leadership transfer to the other follower, whose campaign asks
  # the victim for its vote), until the hook has killed it.
  defp trigger(kind, group, victim, leader, nodes, acked, deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + 30_000

    cond do
      victim not in Node.list() ->
        acked

      System.monotonic_time(:millisecond) > deadline ->
        flunk("#{victim} was not killed in a #{kind} Ready")

      kind == :entries ->
        acked = commands(group, nodes -- [victim], acked, 1)
        trigger(kind, group, victim, leader, nodes, acked, deadline)

      kind == :vote ->
        # The first transfer can elect the target on the old leader's vote
        # alone (the victim then learns the new term from an append, with
        # no vote to persist): the next transfer must start from whoever
        # leads now, or it is refused by a follower and nothing happens.
        leader = current_leader(group, nodes -- [victim], leader)
        target = hd(nodes -- [leader, victim])
        _ = safe(fn -> :erpc.call(leader, Synod.Raft, :transfer_leader, [group, target]) end)
        Process.sleep(50)
        trigger(kind, group, victim, leader, nodes, acked, deadline)
    end
  end

  # `n` commands from each client node; returns `acked` plus the ones that
  # were acknowledged (a command whose outcome is unknown is not counted).
  defp commands(group, clients, acked, n) do
    Enum.reduce(clients, acked, fn client, acked ->
      Enum.reduce(1..n, acked, fn _, acked ->
        i = System.unique_integer([:positive])

        case safe_command(client, group, i) do
          {:ok, _} -> [i | acked]
          _ -> acked
        end
      end)
    end)
  end

  # The leader as one of `nodes` sees it, or `fallback` while none names one.
  defp current_leader(group, nodes, fallback) do
    Enum.find_value(nodes, fallback, fn n ->
      safe(fn -> :erpc.call(n, Synod.Raft, :leader, [group], 2_000) end)
    end)
  end

  defp safe(fun) do
    fun.()
  catch
    _, _ -> nil
  end

  defp safe_command(client, group, i) do
    Raft.command(client, group, {:put, i, i}, 10_000)
  catch
    _, _ -> :unknown
  end

  # log: :wal makes the members started on `nodes` (now and after a
  # restart) use their node's shared WAL, under dir/wal/<node>.
  defp use_log(_nodes, :files, _dir), do: :ok

  defp use_log(nodes, :writer, _dir) do
    for n <- nodes,
        do: :ok = :erpc.call(n, Application, :put_env, [:synod, :raft_fsync_writer, true])

    :ok
  end

  defp use_log(nodes, :wal, dir) do
    for n <- nodes do
      wal_dir = Path.join([dir, "wal", Atom.to_string(n)])
      :ok = :erpc.call(n, Application, :put_env, [:synod, :raft_log, :wal])
      :ok = :erpc.call(n, Application, :put_env, [:synod, :wal_dir, wal_dir])
    end

    :ok
  end

  defp restart(victim, names, nodes, ctx) do
    name = Enum.at(names, Enum.find_index(nodes, &(&1 == victim)))
    [{_, ^victim} = peer] = LocalCluster.start(1, names: [name])
    Agent.update(ctx.started, &[peer | &1])
    use_log([victim], ctx.log, ctx.dir)

    {:ok, _} =
      :erpc.call(victim, Synod.Raft, :start_member, [
        [
          name: ctx.group,
          voters: nodes,
          data_dir: Path.join(ctx.dir, Atom.to_string(victim)),
          machine: Synod.Raft.KV
        ]
      ])

    Raft.watch_all(ctx.group, [victim])
  end
end
