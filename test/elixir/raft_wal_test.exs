defmodule Synod.RaftWalTest do
  # The node's shared write-ahead log (Synod.Raft.Wal) on real files: the
  # batching decisions (pure), one fdatasync for the appends of many
  # members, replay into the segments, a torn tail, a corrupt record
  # refused by file and offset, truncation once the segments are synced,
  # a one-voter group running on it across restarts, and a queued notice
  # taken into the member's next Ready.
  use ExUnit.Case, async: false

  alias Synod.Raft.{Storage, Wal}
  alias Synod.Raft.Wal.Batch
  alias Synod.Test.Wait

  setup_all do
    Synod.LocalCluster.ensure_distributed()
    :ok
  end

  setup do
    stop_wal()
    dir = Path.join(System.tmp_dir!(), "synod-wal-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)

    on_exit(fn ->
      stop_wal()
      File.rm_rf(dir)
    end)

    {:ok, dir: dir, wal_dir: Path.join(dir, "wal")}
  end

  defp stop_wal do
    case Process.whereis(Wal) do
      nil -> :ok
      pid -> DynamicSupervisor.terminate_child(Synod.Raft.WalSupervisor, pid)
    end
  end

  # Kills the WAL as a crash would (nothing flushed at exit, nothing cleaned).
  defp kill_wal do
    pid = Process.whereis(Wal)
    ref = Process.monitor(pid)
    Process.exit(pid, :kill)
    assert_receive {:DOWN, ^ref, _, _, _}
  end

  defp append(pid \\ self(), seq, dir, offset, data) do
    %{pid: pid, seq: seq, dir: dir, generation: 0, offset: offset, data: data}
  end

  # -- the pure decisions ---------------------------------------------------------

  test "a batch keeps arrival order, tells each member its highest seq once, names its segments" do
    other = spawn(fn -> :ok end)

    batch =
      Batch.new()
      |> Batch.add(append(1, "/a", 0, "one"))
      |> Batch.add(append(other, 7, "/b", 0, "two"))
      |> Batch.add(append(2, "/a", 3, "three"))

    cut = Batch.cut(batch)
    assert cut.count == 3
    assert Enum.sort(cut.notices) == Enum.sort([{self(), 2}, {other, 7}])
    assert cut.segments == [{"/a", 0}, {"/b", 0}]
    bin = IO.iodata_to_binary(cut.iodata)
    assert byte_size(bin) == cut.bytes
    assert decode_all(bin) == [{"/a", 0, "one"}, {"/b", 0, "two"}, {"/a", 3, "three"}]
  end

  test "an append over the piece size becomes several records at consecutive offsets" do
    batch = Batch.add(Batch.new(), append(1, "/a", 100, ["abcdefg", "hij"]), 4)
    cut = Batch.cut(batch)
    assert cut.notices == [{self(), 1}]
    bin = IO.iodata_to_binary(cut.iodata)
    assert decode_all(bin) == [{"/a", 100, "abcd"}, {"/a", 104, "efgh"}, {"/a", 108, "ij"}]
  end

  test "sync when nothing else waits or the batch is full; collect while appends queue" do
    assert Batch.decide(Batch.new(), 0, 100) == :idle
    batch = Batch.add(Batch.new(), append(1, "/a", 0, "x"))
    assert Batch.decide(batch, 0, 1_000_000) == :sync
    assert Batch.decide(batch, 5, 1_000_000) == :collect
    assert Batch.decide(batch, 5, 10) == :sync
  end

  defp decode_all(bin, offset \\ 0) do
    case Storage.read_record(bin, offset) do
      {:ok, body, next} ->
        {:ok, r} = Batch.decode(body)
        [{r.dir, r.offset, r.data} | decode_all(bin, next)]

      :torn ->
        []
    end
  end

  # -- the process, on real files ------------------------------------------------

  test "the appends of many members waiting together take one write and one fdatasync", ctx do
    {:ok, wal} = Wal.ensure_started(ctx.wal_dir)
    before = Wal.stats().syncs
    :ok = :sys.suspend(wal)
    me = self()

    members =
      for i <- 1..10 do
        spawn(fn ->
          :ok = Wal.append(wal, i, Path.join(ctx.dir, "m#{i}"), 0, 0, "rec#{i}")

          receive do
            {:synod_wal_synced, s} -> send(me, {:synced, i, s})
          end
        end)
      end

    Wait.until(fn -> Process.info(wal, :message_queue_len) == {:message_queue_len, 10} end)
    :ok = :sys.resume(wal)
    for i <- 1..10, do: assert_receive({:synced, ^i, ^i}, 5_000)
    assert Wal.stats().syncs == before + 1
    assert Wal.stats().records == 10
    assert length(members) == 10
  end

  test "after a crash the WAL's records are written again into their segments", ctx do
    seg = Path.join(ctx.dir, "g1")
    File.mkdir_p!(seg)
    log = Path.join(seg, "log.0")
    File.write!(log, "")
    {:ok, wal} = Wal.ensure_started(ctx.wal_dir)

    # What the member wrote (and the WAL made durable): "aaa" then "bbbb".
    for {seq, offset, data} <- [{1, 0, "aaa"}, {2, 3, "bbbb"}] do
      :ok = Wal.append(wal, seq, seg, 0, offset, data)
      assert_receive {:synod_wal_synced, ^seq}
    end

    # The segment lost its unsynced pages, and holds junk past them.
    kill_wal()
    File.write!(log, "aXXXXXXXXXXjunk")
    {:ok, _} = Wal.ensure_started(ctx.wal_dir)
    assert File.read!(log) == "aaabbbb"
    assert Wal.stats().replayed == 2
    # Replayed, synced, and the WAL files it came from are gone.
    assert Path.wildcard(Path.join(ctx.wal_dir, "wal.*")) == [Path.join(ctx.wal_dir, "wal.2")]
  end

  test "a member's open record drops its dir's earlier records and cuts its log there", ctx do
    seg = Path.join(ctx.dir, "g1")
    File.mkdir_p!(seg)
    log = Path.join(seg, "log.0")
    {:ok, wal} = Wal.ensure_started(ctx.wal_dir)
    # An old group's records, then its dir made again (a new group, an
    # empty durable log), and one record of the new group.
    :ok = Wal.append(wal, 1, seg, 0, 0, "old-group-bytes")
    assert_receive {:synod_wal_synced, 1}
    File.write!(log, "")
    :ok = Wal.opened(wal, 2, seg, 0, 0)
    assert_receive {:synod_wal_synced, 2}
    :ok = Wal.append(wal, 3, seg, 0, 0, "new")
    assert_receive {:synod_wal_synced, 3}
    kill_wal()
    File.write!(log, "newjunk")
    {:ok, _} = Wal.ensure_started(ctx.wal_dir)
    assert File.read!(log) == "new"
  end

  test "a segment file that no longer exists is skipped on replay", ctx do
    seg = Path.join(ctx.dir, "gone")
    {:ok, wal} = Wal.ensure_started(ctx.wal_dir)
    :ok = Wal.append(wal, 1, seg, 0, 0, "aaa")
    assert_receive {:synod_wal_synced, 1}
    kill_wal()
    {:ok, _} = Wal.ensure_started(ctx.wal_dir)
    refute File.exists?(seg)
  end

  test "a torn tail of the last WAL file is ignored: it was never acknowledged", ctx do
    seg = Path.join(ctx.dir, "g1")
    File.mkdir_p!(seg)
    log = Path.join(seg, "log.0")
    File.write!(log, "")
    {:ok, wal} = Wal.ensure_started(ctx.wal_dir)
    :ok = Wal.append(wal, 1, seg, 0, 0, "aaa")
    assert_receive {:synod_wal_synced, 1}
    kill_wal()

    # Half of a second record, as a write cut by a crash leaves it.
    wal_file = Path.join(ctx.wal_dir, "wal.1")
    record = IO.iodata_to_binary(Storage.frame(Batch.body(append(2, seg, 3, "bbbb"))))
    File.write!(wal_file, binary_part(record, 0, div(byte_size(record), 2)), [:append])
    File.write!(log, "aaab")

    {:ok, _} = Wal.ensure_started(ctx.wal_dir)
    assert File.read!(log) == "aaa"
    assert Wal.stats().replayed == 1
  end

  test "a corrupt record inside a WAL file is refused with its file and offset", ctx do
    seg = Path.join(ctx.dir, "g1")
    File.mkdir_p!(seg)
    File.write!(Path.join(seg, "log.0"), "")
    {:ok, wal} = Wal.ensure_started(ctx.wal_dir)

    for {seq, offset, data} <- [{1, 0, "aaa"}, {2, 3, "bbbb"}] do
      :ok = Wal.append(wal, seq, seg, 0, offset, data)
      assert_receive {:synod_wal_synced, ^seq}
    end

    kill_wal()
    wal_file = Path.join(ctx.wal_dir, "wal.1")
    bin = File.read!(wal_file)
    # The last byte of the first record's body (its data), flipped.
    {:ok, _body, first_end} = Storage.read_record(bin, 0)
    <<head::binary-size(first_end - 1), byte, rest::binary>> = bin
    File.write!(wal_file, <<head::binary, Bitwise.bxor(byte, 0xFF), rest::binary>>)

    assert {:error, {:corrupt, ^wal_file, 0, "bad body checksum"}} =
             Wal.ensure_started(ctx.wal_dir)

    # Refused, and left as it was for whoever looks at it.
    assert File.read!(wal_file) != bin and File.exists?(wal_file)
  end

  test "a full WAL file is dropped once the segments it covered are synced", ctx do
    seg = Path.join(ctx.dir, "g1")
    File.mkdir_p!(seg)
    log = Path.join(seg, "log.0")
    File.write!(log, "")
    {:ok, wal} = Wal.ensure_started(ctx.wal_dir, max_file_bytes: 200)
    {:ok, f} = :file.open(log, [:raw, :binary, :append])

    Enum.reduce(1..20, 0, fn seq, offset ->
      data = :binary.copy(<<seq>>, 30)
      :ok = :file.write(f, data)
      :ok = Wal.append(wal, seq, seg, 0, offset, data)
      assert_receive {:synod_wal_synced, ^seq}
      offset + 30
    end)

    :file.close(f)
    stats = Wal.stats()
    assert stats.rolls >= 2
    assert [only] = Path.wildcard(Path.join(ctx.wal_dir, "wal.*"))
    assert only == Path.join(ctx.wal_dir, "wal.#{stats.file}")

    # Recovery from what is left rebuilds the same segment.
    kill_wal()
    {:ok, _} = Wal.ensure_started(ctx.wal_dir)
    assert File.read!(log) == Enum.map_join(1..20, &:binary.copy(<<&1>>, 30))
  end

  test "every member of a node names the same WAL directory", ctx do
    {:ok, _} = Wal.ensure_started(ctx.wal_dir)
    other = Path.join(ctx.dir, "other")
    expanded = Path.expand(ctx.wal_dir)
    assert {:error, {:wal_dir, ^expanded}} = Wal.ensure_started(other)
  end

  # -- a member on the WAL -------------------------------------------------------

  test "a one-voter group on the WAL commits, snapshots and recovers across restarts", ctx do
    g = :"w#{System.unique_integer([:positive])}"
    data = Path.join(ctx.dir, "member")

    opts = [
      name: g,
      voters: [node()],
      data_dir: data,
      machine: Synod.Raft.KV,
      log: :wal,
      wal_dir: ctx.wal_dir,
      snapshot_every: 50
    ]

    {:ok, _} = Synod.Raft.start_member(opts)
    Wait.until(fn -> Synod.leader?(g) end)
    before = Wal.stats().syncs
    for i <- 1..120, do: {:ok, _} = Synod.Raft.command(g, {:put, i, i})
    assert Wal.stats().syncs > before

    # A crash of the WAL takes the member down with it; both come back,
    # the WAL first, replaying, and nothing acknowledged is lost.
    kill_wal()
    Wait.until(fn -> match?({:ok, _}, safe_query(g)) end, 15_000)
    {:ok, state} = Synod.Raft.query(g, & &1)
    assert Enum.all?(1..120, &(state[&1] == &1))

    :ok = Synod.Raft.stop_member(g)
    {:ok, _} = Synod.Raft.start_member(opts)
    Wait.until(fn -> Synod.leader?(g) end)
    {:ok, state} = Synod.Raft.query(g, & &1)
    assert Enum.all?(1..120, &(state[&1] == &1))
    assert Path.wildcard(Path.join(data, "snapshot.*")) != []
    :ok = Synod.Raft.stop_member(g)
  end

  # async_persist: while the WAL holds its records the member keeps
  # answering; the command commits (one voter: on the leader's own durable
  # copy) only once the WAL's notice is fed to the core.
  test "a member on the WAL keeps stepping while its records are in flight", ctx do
    g = :"w#{System.unique_integer([:positive])}"

    opts = [
      name: g,
      voters: [node()],
      data_dir: Path.join(ctx.dir, "member"),
      machine: Synod.Raft.KV,
      log: :wal,
      wal_dir: ctx.wal_dir
    ]

    {:ok, _} = Synod.Raft.start_member(opts)
    Wait.until(fn -> Synod.leader?(g) end)
    {:ok, _} = Synod.Raft.command(g, {:put, :a, 1})
    wal = Process.whereis(Wal)
    :ok = :sys.suspend(wal)
    task = Task.async(fn -> Synod.Raft.command(g, {:put, :b, 2}, timeout: 30_000) end)
    member = Synod.Raft.member_name(g)

    # the member takes the proposal, hands its records to the WAL and does
    # not wait: it answers a call while the WAL holds them
    Wait.until(fn -> match?({:messages, [_ | _]}, Process.info(wal, :messages)) end)
    st = GenServer.call(member, :status, 2_000)
    assert st.last_index > st.commit
    assert Task.yield(task, 100) == nil

    :ok = :sys.resume(wal)
    assert {:ok, _} = Task.await(task, 30_000)
    {:ok, state} = Synod.Raft.query(g, & &1)
    assert state[:b] == 2
    :ok = Synod.Raft.stop_member(g)
  end

  # A WAL notice already queued behind another input is taken before that
  # input's Ready (the member's take_notices/1): the one Ready carries
  # both, where the notice used to get a turn of its own and the input a
  # `:flush` round trip to batch with it. The mailbox is set up by
  # suspending the WAL and then the member: [command c, notice for b].
  test "a queued WAL notice joins the next input's Ready, no :flush turn", ctx do
    g = :"w#{System.unique_integer([:positive])}"

    opts = [
      name: g,
      voters: [node()],
      data_dir: Path.join(ctx.dir, "member"),
      machine: Synod.Raft.KV,
      log: :wal,
      wal_dir: ctx.wal_dir,
      # no tick may land in the mailbox meanwhile
      tick_ms: 60_000
    ]

    {:ok, _} = Synod.Raft.start_member(opts)
    # (stopped before the setup's on_exit stops the WAL, even on a failure)
    on_exit(fn -> Synod.Raft.stop_member(g) end)
    Wait.until(fn -> Synod.leader?(g) end)
    {:ok, _} = Synod.Raft.command(g, {:put, :a, 1})
    wal = Process.whereis(Wal)
    member = Process.whereis(Synod.Raft.member_name(g))

    :ok = :sys.suspend(wal)
    b = Task.async(fn -> Synod.Raft.command(g, {:put, :b, 2}, timeout: 30_000) end)
    Wait.until(fn -> queued?(wal, &match?({:wal_append, ^member, _, _, _, _, _}, &1)) end)
    :ok = :sys.suspend(member)
    c = Task.async(fn -> Synod.Raft.command(g, {:put, :c, 3}, timeout: 30_000) end)
    Wait.until(fn -> queued?(member, &match?({:"$gen_call", _, {:command, _, _}}, &1)) end)
    :ok = :sys.resume(wal)
    Wait.until(fn -> queued?(member, &match?({:synod_wal_synced, _}, &1)) end)

    1 = :erlang.trace(member, true, [:receive])
    :ok = :sys.resume(member)
    assert {:ok, _} = Task.await(b, 30_000)
    assert {:ok, _} = Task.await(c, 30_000)
    1 = :erlang.trace(member, false, [:receive])
    ref = :erlang.trace_delivered(member)
    assert_receive {:trace_delivered, ^member, ^ref}
    received = receive_traced(member, [])

    assert Enum.any?(received, &match?({:synod_wal_synced, _}, &1))
    refute :flush in received, "the notice had a turn of its own: #{inspect(received)}"
    {:ok, state} = Synod.Raft.query(g, & &1)
    assert {state[:a], state[:b], state[:c]} == {1, 2, 3}
  end

  defp queued?(pid, match?) do
    {:messages, messages} = Process.info(pid, :messages)
    Enum.any?(messages, match?)
  end

  defp receive_traced(pid, acc) do
    receive do
      {:trace, ^pid, :receive, msg} -> receive_traced(pid, [msg | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "log: :wal without a WAL directory is refused by name" do
    assert_raise ArgumentError, ~r/wal_dir must be/, fn ->
      Synod.Raft.child_spec(
        name: :x,
        voters: [node()],
        data_dir: "/tmp/x",
        machine: Synod.Raft.KV,
        log: :wal
      )
    end
  end

  defp safe_query(g) do
    Synod.Raft.query(g, & &1, timeout: 1_000)
  catch
    _, _ -> :error
  end
end
