defmodule Synod.RaftSnapshotFaultTest do
  # Faults in a chunked snapshot transfer, on 3 real peers with real files
  # (issue 18, "Bad input and faults"). A follower is killed, the others
  # overwrite every key and compact past it, and it comes back with its old
  # state: it can only catch up by a snapshot, sent in chunks of 16 KiB
  # (about 40 of them). Then one thing goes wrong in the transfer:
  #
  #   * a chunk is lost (the leader does not send it once),
  #   * a chunk is damaged in transit (a byte flipped after its CRC was
  #     computed: the follower's decoder refuses it),
  #   * a chunk's bytes are damaged before its CRC (only the whole file's
  #     checksum refuses it: the follower drops the file and the leader
  #     starts a new transfer from offset 0),
  #   * the leader is killed mid-transfer (it stops sending after a few
  #     chunks, then dies; the new leader sends the snapshot),
  #   * the follower's disk is full (a real tmpfs, filled): it cannot write
  #     the chunks, logs why, stays up and is retried until space is back.
  #
  # Each ends with the follower installing a whole snapshot and then
  # answering consistency: :stale reads with the latest values; all the
  # while, every stale read it answers is either all old values or all new
  # ones (never partial state). The faults are made by a test-only hook in
  # Synod.Raft.Member (compiled only with MIX_ENV=test) on the leader's
  # sending side, so everything else is the real path.
  use ExUnit.Case, async: false

  alias Synod.Store
  alias Synod.Test.{Cluster, LogForward, Wait}

  @moduletag :distributed
  @moduletag timeout: 120_000

  @keys 240
  @value_bytes 2048
  @chunk 16 * 1024
  @fault_key {Synod.Raft.Member, :chunk_fault}

  mount_probe = Synod.Test.Tmpfs.probe()

  @mount_probe mount_probe

  test "a chunk lost in transit is resent; the follower installs the whole snapshot" do
    run_fault(:drop, fn ctx ->
      assert_receive {:chunk_fault, leader, :drop, offset}, 30_000
      assert leader == ctx.leader and offset > 0
    end)
  end

  test "a chunk damaged in transit is refused by its CRC and resent" do
    run_fault(:corrupt, fn %{victim: victim} ->
      assert_receive {:chunk_fault, _, :corrupt, _offset}, 30_000
      # the follower's decoder refused it, by name
      assert_logged(victim, ~r/message from .* refused: bad_checksum$/)
    end)
  end

  test "a chunk whose bytes were damaged before its CRC fails the file's checksum: a new transfer" do
    run_fault(:corrupt_data, fn %{victim: victim} ->
      assert_receive {:chunk_fault, _, :corrupt_data, _offset}, 30_000
      assert_logged(victim, ~r/snapshot \d+ refused: \{:error, \{:checksum, \d+, \d+\}\}/)
    end)
  end

  test "the leader killed mid-transfer: the new leader sends the snapshot" do
    c = start_cluster()
    ctx = prepare(c)
    %{leader: leader, victim: victim, other: other} = ctx

    # the leader stops sending after 8 chunks, then dies
    arm(c, leader, :drop, 9, :all)
    c = restart_victim(c, victim)
    assert_receive {:chunk_fault, ^leader, :drop, offset}, 30_000
    assert offset > 0
    assert current(ctx, victim) in [:old, :unavailable]
    Cluster.kill(c, leader)
    assert Cluster.wait_leader(c, [victim, other]) == other

    finish(c, ctx)
  end

  @tag skip: if(@mount_probe != :ok, do: @mount_probe, else: false)
  test "a follower whose disk is full logs why, stays up, is retried, and installs once there is space" do
    root = Path.join(System.tmp_dir!(), "synod-snapf-#{System.unique_integer([:positive])}")

    mount = fn nodes ->
      Synod.Test.Tmpfs.mount!(Path.join(root, Atom.to_string(List.last(nodes))), 8)
    end

    c = start_cluster(data_root: root, before_store: mount)
    disk = Cluster.data_dir(c, List.last(c.nodes))
    on_exit(fn -> Synod.Test.Tmpfs.unmount(disk) end)

    # the victim is the node whose dir is the tmpfs
    ctx = prepare(c, List.last(c.nodes))
    %{victim: victim} = ctx

    # fill its disk but for 256 KiB: less than the snapshot (about 1.7 MiB)
    filler = Path.join(disk, "filler")
    fill_disk(disk, filler, 256 * 1024)

    c = restart_victim(c, victim)
    member = member_pid(c, victim)

    # it says why (each time the transfer is refused, naming the cause), and
    # the transfer is retried
    refusals = collect_refusals(victim, 3, 30_000)
    assert length(refusals) == 3, inspect(refusals)

    assert Enum.all?(refusals, &(&1 =~ "{:write_failed, :enospc}")),
           Enum.join(refusals, "\n")

    # with a growing backoff: one election timeout, then twice that, ...
    delays =
      for r <- refusals do
        [_, ms] = Regex.run(~r/sends it again in (\d+) ms/, r)
        String.to_integer(ms)
      end

    assert [d, d2, d4] = delays
    assert d2 == 2 * d and d4 == 4 * d

    # up all along, the same process, still serving its old state whole
    assert member_pid(c, victim) == member
    assert current(ctx, victim) == :old

    # space comes back: the next transfer installs
    File.rm!(filler)
    finish(c, ctx)
    assert member_pid(c, victim) == member
  end

  # -- the common run --------------------------------------------------------

  defp run_fault(fault, check) do
    c = start_cluster()
    ctx = prepare(c)
    # on every member that could lead: the 5th chunk it sends
    for n <- [ctx.leader, ctx.other], do: arm(c, n, fault, 5, 1)
    c = restart_victim(c, ctx.victim)
    check.(ctx)
    finish(c, ctx)
  end

  # The victim ends with the new values (stale reads), by a snapshot it
  # installed, never having served partial state; then a new write
  # through its node shows on it.
  defp finish(c, ctx) do
    observed = watch_until_new(ctx, ctx.victim)
    assert_installed(ctx.victim)
    bad = Enum.reject(observed, &(&1 in [:old, :prefix, :new, :unavailable]))
    assert bad == [], "partial state served: #{inspect(bad)}"

    {:ok, rev, _} =
      :erpc.call(ctx.victim, Store, :put, [c.store, "after", "latest", [timeout: 10_000]])

    Wait.until(fn ->
      match?(
        {:ok, %{value: "latest", mod_revision: ^rev}},
        :erpc.call(ctx.victim, Store, :get, [c.store, "after", [consistency: :stale]])
      )
    end)

    assert current(ctx, ctx.victim) == :new
  end

  defp start_cluster(opts \\ []) do
    root =
      Keyword.get_lazy(opts, :data_root, fn ->
        Path.join(System.tmp_dir!(), "synod-snapf-#{System.unique_integer([:positive])}")
      end)

    c =
      Cluster.start(3,
        data_root: root,
        prefix: "snapf",
        store: :"snapf#{System.unique_integer([:positive])}",
        store_opts: [snapshot_every: 100, snapshot_chunk: @chunk],
        before_store: Keyword.get(opts, :before_store, fn _ -> :ok end)
      )

    on_exit(fn ->
      Cluster.stop(c)
      File.rm_rf(root)
    end)

    c
  end

  # Old values everywhere, the victim killed, new values on the others and
  # compacted past what the victim has: it can only catch up by snapshot.
  defp prepare(c, victim \\ nil) do
    leader = Cluster.wait_leader(c, c.nodes)

    victim =
      case victim do
        nil -> hd(c.nodes -- [leader])
        ^leader -> move_leader(c, victim)
        v -> v
      end

    leader = Cluster.wait_leader(c, c.nodes)
    [other] = c.nodes -- [leader, victim]

    old = fill(c, leader, :old)
    Wait.until(fn -> status(victim, c.store).applied >= status(leader, c.store).commit end)
    ctx = %{leader: leader, victim: victim, other: other, store: c.store, revs: %{old: old}}
    assert current(ctx, victim) == :old
    behind = status(victim, c.store).applied
    Cluster.kill(c, victim)

    new = fill(c, leader, :new)

    Wait.until(
      fn -> Enum.all?([leader, other], &(status(&1, c.store).first_index > behind + 1)) end,
      20_000
    )

    %{ctx | revs: %{old: old, new: new}}
  end

  defp move_leader(c, from) do
    [to | _] = c.nodes -- [from]

    Wait.until(
      fn ->
        :erpc.call(from, Synod.Raft, :transfer_leader, [c.store, to])
        Cluster.wait_leader(c, c.nodes) != from
      end,
      20_000,
      200
    )

    from
  end

  # Puts every key with a value of generation `gen`; returns each put's
  # revision by key number.
  defp fill(c, leader, gen) do
    filler = :binary.copy(<<gen_byte(gen)>>, @value_bytes)

    1..@keys
    |> Task.async_stream(
      fn i ->
        value = <<gen_byte(gen), i::32, filler::binary>>

        {:ok, rev, _} =
          :erpc.call(leader, Store, :put, [c.store, key(i), value, [timeout: 20_000]])

        {i, rev}
      end,
      max_concurrency: 8,
      timeout: 30_000
    )
    |> Map.new(fn {:ok, {i, rev}} -> {i, rev} end)
  end

  defp gen_byte(:old), do: 1
  defp gen_byte(:new), do: 2

  defp key(i), do: "k/" <> String.pad_leading(Integer.to_string(i), 4, "0")

  defp arm(c, node, fault, nth, count) do
    f = %{group: c.store, fault: fault, nth: nth, count: count, tag: make_ref(), notify: self()}
    :ok = :erpc.call(node, :persistent_term, :put, [@fault_key, f])
  end

  defp restart_victim(c, victim),
    do: Cluster.restart(c, victim, &LogForward.attach(&1, self()))

  defp member_pid(c, node),
    do: :erpc.call(node, Process, :whereis, [Synod.Raft.member_name(c.store)])

  defp status(node, store), do: :erpc.call(node, Synod.Raft, :status, [store], 5_000)

  # What a stale read of every key on `node` shows: :old or :new when every
  # key has the value and revision of that generation's put; :prefix when
  # it is the state at some revision R in between (every key whose new put
  # has a revision <= R shows it, every other its old put: the state of a
  # snapshot taken mid-way, before the entries after it are applied);
  # :unavailable when the read is not answered. Anything else is partial
  # state.
  defp current(ctx, node) do
    opts = [prefix: true, consistency: :stale]

    case :erpc.call(node, Store, :range, [ctx.store, "k/", opts], 5_000) do
      {:ok, kvs, count, false} -> classify(kvs, count, ctx.revs)
      other -> {:unexpected, other}
    end
  catch
    _, _ -> :unavailable
  end

  defp classify(kvs, count, revs) do
    seen = kvs |> Enum.with_index(1) |> Enum.map(fn {kv, i} -> {i, generation(kv, i, revs)} end)
    top = kvs |> Enum.map(& &1.mod_revision) |> Enum.max(fn -> 0 end)

    consistent? =
      count == @keys and
        Enum.all?(seen, fn
          {_i, :new} -> true
          {i, :old} -> not Map.has_key?(revs, :new) or revs.new[i] > top
          _ -> false
        end)

    case {consistent?, seen |> Enum.map(&elem(&1, 1)) |> Enum.uniq()} do
      {true, [:old]} -> :old
      {true, [:new]} -> :new
      {true, _} -> :prefix
      {false, gens} -> {:partial, count, gens}
    end
  end

  # :old or :new when the key's value and revision are those of that
  # generation's put of it.
  defp generation(%{key: key, value: value, mod_revision: rev}, i, revs) do
    with true <- key == key(i),
         <<g, ^i::32, _::binary-size(@value_bytes)>> <- value,
         gen = if(g == 1, do: :old, else: :new),
         true <- Map.get(revs, gen, %{})[i] == rev do
      gen
    else
      _ -> {:bad, key}
    end
  end

  # Polls stale reads on `node` until it shows the new values; returns
  # every observation.
  defp watch_until_new(ctx, node, acc \\ [], deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + 30_000

    case current(ctx, node) do
      :new ->
        Enum.reverse([:new | acc])

      seen ->
        if System.monotonic_time(:millisecond) > deadline,
          do: flunk("#{node} did not catch up; seen: #{inspect(Enum.uniq(acc))}")

        Process.sleep(5)
        watch_until_new(ctx, node, [seen | acc], deadline)
    end
  end

  defp assert_installed(victim) do
    Wait.until(fn ->
      receive do
        {:peer_log, ^victim, :info, "raft " <> text} -> text =~ "installed snapshot"
      after
        0 -> nil
      end
    end)
  end

  # Waits for a warning of `node` that matches `re`; fails with the
  # warnings it logged meanwhile.
  defp assert_logged(node, re, seen \\ []) do
    receive do
      {:peer_log, ^node, :warning, text} ->
        if text =~ re, do: text, else: assert_logged(node, re, [text | seen])
    after
      30_000 ->
        flunk("#{node} logged no #{inspect(re)}; it logged #{inspect(Enum.reverse(seen))}")
    end
  end

  # The first `want` "snapshot N refused" warnings of `victim`.
  defp collect_refusals(victim, want, timeout),
    do: collect_refusals(victim, want, System.monotonic_time(:millisecond) + timeout, [])

  defp collect_refusals(_victim, want, _deadline, acc) when length(acc) >= want,
    do: Enum.reverse(acc)

  defp collect_refusals(victim, want, deadline, acc) do
    left = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {:peer_log, ^victim, :warning, text} ->
        acc = if text =~ ~r/snapshot \d+ refused/, do: [text | acc], else: acc
        collect_refusals(victim, want, deadline, acc)
    after
      left -> Enum.reverse(acc)
    end
  end

  defp fill_disk(disk, filler, leave) do
    {out, 0} = System.cmd("df", ["-B1", "--output=avail", disk])
    avail = out |> String.split() |> List.last() |> String.to_integer()
    blocks = div(max(avail - leave, 0), 4096)

    {_, 0} =
      System.cmd("dd", ["if=/dev/zero", "of=#{filler}", "bs=4096", "count=#{blocks}"],
        stderr_to_stdout: true
      )
  end
end
