defmodule Synod.RaftSyncerTest do
  # `fsync_writer: true` (Synod.Raft.Syncer): a `log: :files` member writes
  # its own log file and a process beside it fdatasyncs it, while the
  # member keeps stepping. The syncer's rules on real files, then a member
  # that uses it (docs/raft.md, "64 clients (issue 18, branch raft64)").
  # async: false: the fdatasync count is the VM's (call tracing).
  use ExUnit.Case, async: false

  alias Synod.Raft.Syncer
  alias Synod.Test.Wait

  setup_all do
    Synod.LocalCluster.ensure_distributed()
    :ok
  end

  setup do
    dir = Path.join(System.tmp_dir!(), "synod-raft-syncer-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, dir: dir}
  end

  defp datasyncs(fun) do
    mfa = {:file, :datasync, 1}
    :erlang.trace_pattern(mfa, true, [:call_count])
    fun.()
    {:call_count, n} = :erlang.trace_info(mfa, :call_count)
    :erlang.trace_pattern(mfa, false, [:call_count])
    n
  end

  test "every request queued is covered by one fdatasync, and the notice names the highest seq",
       %{dir: dir} do
    path = Path.join(dir, "log.0")
    {:ok, f} = :file.open(path, [:raw, :binary, :append])
    :ok = :file.write(f, "records")
    syncer = Syncer.start_link()

    n =
      datasyncs(fn ->
        :erlang.suspend_process(syncer)
        for seq <- [3, 7, 5], do: :ok = Syncer.sync(syncer, seq, path)
        :erlang.resume_process(syncer)
        assert_receive {:synod_wal_synced, 7}, 5_000
        refute_receive {:synod_wal_synced, _}, 100
      end)

    assert n == 1

    # one request, one fdatasync, its own seq
    assert datasyncs(fn ->
             :ok = Syncer.sync(syncer, 8, path)
             assert_receive {:synod_wal_synced, 8}, 5_000
           end) == 1

    :file.close(f)
  end

  test "two log files queued (a new generation): each is fdatasynced once", %{dir: dir} do
    [a, b] = for g <- [1, 2], do: Path.join(dir, "log.#{g}")
    for p <- [a, b], do: File.write!(p, "x")
    syncer = Syncer.start_link()

    n =
      datasyncs(fn ->
        :erlang.suspend_process(syncer)
        for {seq, p} <- [{1, a}, {2, a}, {3, b}, {4, b}], do: :ok = Syncer.sync(syncer, seq, p)
        :erlang.resume_process(syncer)
        assert_receive {:synod_wal_synced, 4}, 5_000
      end)

    assert n == 2
  end

  # A log file that is gone was replaced by a snapshot install, which the
  # member made durable first: its writes are durable, the notice comes.
  test "a log file replaced (gone) is answered", %{dir: dir} do
    syncer = Syncer.start_link()
    :ok = Syncer.sync(syncer, 1, Path.join(dir, "log.9"))
    assert_receive {:synod_wal_synced, 1}, 5_000
  end

  test "a log file that cannot be fdatasynced stops the syncer and its member", %{dir: dir} do
    me = self()

    {member, ref} =
      spawn_monitor(fn ->
        syncer = Syncer.start_link()
        send(me, {:syncer, syncer})
        # under a regular file: not "gone" (:enoent) but :enotdir
        file = Path.join(dir, "plain")
        File.write!(file, "")
        :ok = Syncer.sync(syncer, 1, Path.join(file, "log.1"))
        Process.sleep(:infinity)
      end)

    assert_receive {:syncer, _syncer}, 5_000
    assert_receive {:DOWN, ^ref, :process, ^member, {:fsync_failed, _, :enotdir}}, 5_000
  end

  test "the syncer stops with its member, also on a normal exit" do
    me = self()

    {member, ref} =
      spawn_monitor(fn ->
        send(me, {:syncer, Syncer.start_link()})

        receive do
          :stop -> :ok
        end
      end)

    assert_receive {:syncer, syncer}, 5_000
    sref = Process.monitor(syncer)
    send(member, :stop)
    assert_receive {:DOWN, ^ref, :process, ^member, :normal}, 5_000
    assert_receive {:DOWN, ^sref, :process, ^syncer, :normal}, 5_000
  end

  # -- a member that uses it -------------------------------------------------------

  defp start(g, dir, opts \\ []) do
    Synod.Raft.start_member(
      [
        name: g,
        voters: [node()],
        data_dir: dir,
        machine: Synod.Raft.KV,
        fsync_writer: true
      ] ++ opts
    )
  end

  test "a one-voter member with its syncer commits, snapshots and recovers across restarts",
       %{dir: dir} do
    g = :"s#{System.unique_integer([:positive])}"
    data = Path.join(dir, "member")
    {:ok, _} = start(g, data, snapshot_every: 50)
    Wait.until(fn -> Synod.leader?(g) end)
    member = Process.whereis(Synod.Raft.member_name(g))
    assert is_pid(:sys.get_state(member).syncer)

    results = for i <- 1..120, do: Task.async(fn -> Synod.Raft.command(g, {:put, i, i}) end)

    assert Enum.all?(Task.await_many(results, 30_000), &match?({:ok, _}, &1))
    :ok = Synod.Raft.stop_member(g)
    {:ok, _} = start(g, data, snapshot_every: 50)
    Wait.until(fn -> Synod.leader?(g) end)
    {:ok, state} = Synod.Raft.query(g, & &1)
    assert Enum.all?(1..120, &(state[&1] == &1))
    assert Path.wildcard(Path.join(data, "snapshot.*")) != []
    :ok = Synod.Raft.stop_member(g)
  end

  # Three voters on peers: the followers' answers and the leader's own
  # notices arrive while other inputs are queued, so a notice is often
  # taken from the mailbox before a Ready (take_notices/1); it must send
  # the writes held meanwhile (else the member holds them forever and
  # these commands time out).
  test "three voters with syncers commit sequential and concurrent commands", %{dir: dir} do
    peers = Synod.LocalCluster.start(3)
    on_exit(fn -> Synod.LocalCluster.stop(peers) end)
    nodes = Enum.map(peers, &elem(&1, 1))

    for n <- nodes,
        do: :ok = :erpc.call(n, Application, :put_env, [:synod, :raft_fsync_writer, true])

    g = :"s3#{System.unique_integer([:positive])}"
    leader = Synod.Test.Raft.start_group(g, nodes, dir)
    member = :erpc.call(leader, Process, :whereis, [Synod.Raft.member_name(g)])
    assert is_pid(:sys.get_state(member).syncer)
    for i <- 1..100, do: assert({:ok, _} = Synod.Test.Raft.command(leader, g, {:put, i, i}))

    results =
      for i <- 101..300,
          do: Task.async(fn -> Synod.Test.Raft.command(leader, g, {:put, i, i}) end)

    assert Enum.all?(Task.await_many(results, 30_000), &match?({:ok, _}, &1))
    Synod.Test.Raft.wait_converged(g, nodes)

    for n <- nodes do
      state = Synod.Test.Raft.local_state(n, g)
      assert Enum.all?(1..300, &(state[&1] == &1))
    end
  end

  # async_persist on its own files: while the syncer holds the fdatasync
  # the member keeps answering, and the command commits (one voter: on the
  # leader's own durable copy) only once the syncer's notice is fed to the
  # core.
  test "the member keeps stepping while its syncer holds the fdatasync", %{dir: dir} do
    g = :"s#{System.unique_integer([:positive])}"
    {:ok, _} = start(g, Path.join(dir, "member"))
    Wait.until(fn -> Synod.leader?(g) end)
    {:ok, _} = Synod.Raft.command(g, {:put, :a, 1})
    member = Synod.Raft.member_name(g)
    syncer = :sys.get_state(member).syncer
    :erlang.suspend_process(syncer)
    task = Task.async(fn -> Synod.Raft.command(g, {:put, :b, 2}, timeout: 30_000) end)

    Wait.until(fn -> match?({:messages, [_ | _]}, Process.info(syncer, :messages)) end)
    st = GenServer.call(member, :status, 2_000)
    assert st.last_index > st.commit
    assert Task.yield(task, 100) == nil

    :erlang.resume_process(syncer)
    assert {:ok, _} = Task.await(task, 30_000)
    {:ok, state} = Synod.Raft.query(g, & &1)
    assert state[:b] == 2
    :ok = Synod.Raft.stop_member(g)
  end

  test "fsync_writer must be a boolean" do
    assert_raise ArgumentError, ~r/fsync_writer must be a boolean/, fn ->
      Synod.Raft.child_spec(
        name: :x,
        voters: [node()],
        data_dir: "/tmp/x",
        machine: Synod.Raft.KV,
        fsync_writer: :yes
      )
    end
  end
end
