defmodule Synod.RaftFullDiskTest do
  # A full disk never loses a group (docs/reliability.md, "A full disk"):
  # on 3 real peers, the third one's data dir is a real 8 MB tmpfs. The
  # third member is made leader, then its disk is filled. It must not exit:
  # it steps down, refuses proposals with {:error, :no_space} at once, and
  # the group goes on committing on the other two (also for callers on the
  # full node). Once the filler is deleted it catches up (by a snapshot: the
  # others compacted meanwhile), its state matches theirs, and a kill -9
  # then a restart from its files recovers the same state (no partial
  # record was left behind).
  use ExUnit.Case, async: false

  alias Synod.Store
  alias Synod.Test.{Cluster, Wait}

  @moduletag :distributed
  @store :full_disk
  @disk_mb 8

  mount_probe = Synod.Test.Tmpfs.probe()

  if mount_probe != :ok, do: @moduletag(skip: mount_probe)

  test "a member whose disk fills steps down, refuses with :no_space, keeps its files and catches up" do
    root = Path.join(System.tmp_dir!(), "synod_full_disk_#{System.unique_integer([:positive])}")

    mount = fn nodes ->
      Synod.Test.Tmpfs.mount!(Path.join(root, Atom.to_string(List.last(nodes))), @disk_mb)
    end

    c =
      Cluster.start(3,
        data_root: root,
        prefix: "fulldisk",
        store: @store,
        store_opts: [snapshot_every: 300],
        before_store: mount
      )

    victim = List.last(c.nodes)
    [a, b] = c.nodes -- [victim]
    disk = Cluster.data_dir(c, victim)

    on_exit(fn ->
      Cluster.stop(c)
      Synod.Test.Tmpfs.unmount(disk)
      File.rm_rf!(root)
    end)

    value = :binary.copy("v", 1024)

    put = fn node, key ->
      :erpc.call(node, Store, :put, [@store, key, value, [timeout: 20_000]])
    end

    status = fn node -> :erpc.call(node, Synod.Raft, :status, [@store]) end

    for i <- 1..50, do: assert({:ok, _, _} = put.(a, "k#{i}"))

    # the full disk's member leads
    Wait.until(
      fn ->
        status.(victim).role == :leader or
          (:erpc.call(a, Synod.Raft, :transfer_leader, [@store, victim]) && false)
      end,
      20_000,
      200
    )

    member = :erpc.call(victim, Process, :whereis, [Synod.Raft.member_name(@store)])
    raft_sup = :erpc.call(victim, Process, :whereis, [Synod.Raft.Supervisor])

    filler = Path.join(disk, "filler")
    System.cmd("sh", ["-c", "dd if=/dev/zero of=#{filler} bs=64k 2>/dev/null; sync"])
    assert File.stat!(filler).size > 0

    # the group goes on: every put succeeds, from a node with a member that
    # can write and from the full node itself
    for i <- 51..450, do: assert({:ok, _, _} = put.(a, "k#{i}"))
    for i <- 451..470, do: assert({:ok, _, _} = put.(victim, "k#{i}"))

    # the same processes: nothing exited, nothing was restarted
    assert :erpc.call(victim, Process, :whereis, [Synod.Raft.member_name(@store)]) == member
    assert :erpc.call(victim, Process, :whereis, [Synod.Raft.Supervisor]) == raft_sup
    stuck = status.(victim)
    assert stuck.storage == {:error, :enospc}
    assert stuck.role != :leader
    assert Cluster.leader_seen_by(c, a) in [a, b]
    # a proposal to it is refused by name, at once
    direct = {:command, Synod.Store.Command.put("direct", "x", []), make_ref()}

    assert {:error, :no_space} =
             :erpc.call(victim, GenServer, :call, [Synod.Raft.member_name(@store), direct, 1_000])

    assert stuck.applied < status.(a).applied

    # space comes back: it catches up and serves again
    File.rm!(filler)

    Wait.until(
      fn ->
        st = status.(victim)
        st.storage == :ok and st.applied == status.(a).applied
      end,
      30_000,
      100
    )

    assert same_state?(c.nodes)
    for i <- 471..480, do: assert({:ok, _, _} = put.(victim, "k#{i}"))
    wait_same_applied(c.nodes, status)
    assert same_state?(c.nodes)

    # what it wrote is whole: a kill -9 and a restart from its files
    # recover the same state
    Cluster.kill(c, victim)
    c = Cluster.restart(c, victim)
    wait_same_applied(c.nodes, status)
    assert same_state?(c.nodes)
    assert {:ok, %{value: ^value}} = :erpc.call(victim, Store, :get, [@store, "k480"])
  end

  test "storage: a sync that fails on a full disk leaves no partial record and loses nothing" do
    dir = Path.join(System.tmp_dir!(), "synod_full_storage_#{System.unique_integer([:positive])}")
    Synod.Test.Tmpfs.mount!(dir, 1)

    on_exit(fn ->
      Synod.Test.Tmpfs.unmount(dir)
      File.rm_rf!(dir)
    end)

    alias Synod.Raft.Storage
    data = :binary.copy("e", 4000)
    entry = fn i -> %{index: i, term: 1, type: 0, data: data} end
    {:ok, s, _} = Storage.open(dir)

    {:ok, s} =
      s |> Storage.write(Enum.map(1..10, entry), %{term: 1, vote: 1, commit: 5}) |> Storage.sync()

    good = File.stat!(Path.join(dir, "log.0")).size

    filler = Path.join(dir, "filler")
    System.cmd("sh", ["-c", "dd if=/dev/zero of=#{filler} bs=4k 2>/dev/null"])
    more = Storage.write(s, Enum.map(11..40, entry), %{term: 1, vote: 1, commit: 20})
    assert {:error, :enospc} = Storage.sync(more)
    # the failed write was cut back: the log is what was synced, whole
    assert File.stat!(Path.join(dir, "log.0")).size == good
    # and marked, so the retry checks the length before it appends
    assert :atomics.get(more.suspect, 1) == 1
    assert {:error, :enospc} = Storage.sync(more)
    assert File.stat!(Path.join(dir, "log.0")).size == good

    File.rm!(filler)
    assert {:ok, s} = Storage.sync(more)
    assert :atomics.get(s.suspect, 1) == 0
    Storage.close(s)
    {:ok, s, recovered} = Storage.open(dir)
    assert Enum.map(recovered.entries, & &1.index) == Enum.to_list(1..40)
    assert recovered.hard_state == %{term: 1, vote: 1, commit: 20}
    Storage.close(s)
  end

  defp wait_same_applied(nodes, status) do
    Wait.until(
      fn -> nodes |> Enum.map(&status.(&1).applied) |> Enum.uniq() |> length() == 1 end,
      30_000,
      100
    )
  end

  # Every member's own state machine (stale reads, one per member) holds
  # the same keys, values and revisions.
  defp same_state?(nodes) do
    ranges =
      for n <- nodes do
        {:ok, kvs, count, false} =
          :erpc.call(n, Store, :range, [@store, "k", [prefix: true, consistency: :stale]])

        {count, Enum.map(kvs, &{&1.key, &1.value, &1.mod_revision})}
      end

    {count, _} = hd(ranges)
    count > 0 and length(Enum.uniq(ranges)) == 1
  end
end
