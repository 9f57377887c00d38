# Scale benchmark: a large store on 3 real :peer nodes (a Synod.Store, fsync on).
#
#   MIX_ENV=test mix run bench/scale_bench.exs [KEYS] [VALUE_BYTES]
#
# Defaults: 1,000,000 keys x 1024-byte values (1 GiB of values); give a
# smaller KEYS for a quick run (e.g. 100000). Figures, each with its
# baseline from the same run where one makes sense:
#
#   load       KEYS puts, 128 per transaction, 4 clients; keys/s and MiB/s
#   snapshot   a compaction on the leader, from snapshot.N.tmp appearing to
#              snapshot.N in place (the store frozen, streamed to the file in
#              1 MiB pieces, fsynced, renamed); MiB/s of snapshot file.
#              Baseline: File.copy + fsync of that file.
#   catch-up   a follower killed, its data dir wiped, restarted: restart ->
#              it applied the leader's commit (chunked transfer, fsync, CRC,
#              install, streamed restore). Baseline: File.copy + fsync.
#   recovery   a follower killed and restarted on its files: restart -> it
#              applied the leader's commit (streamed restore from its
#              snapshot file, log replay). Baseline: reading the snapshot file
#              in 1 MiB pieces (page cache warm, as for the member).
#   RSS        VmRSS of each member's OS process, empty and full; bytes per
#              key above the empty store.
#   put p99    sequential 1 KiB puts on the leader (erpc from the bench
#              node) while a snapshot streams to the wiped follower, against
#              the same puts with nothing streaming, just before.
#
# The baselines are the disk's; a before/after comparison needs a baseline
# worktree of main run the same way.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.Test.Cluster

[keys, value_bytes] =
  case Enum.map(System.argv(), &String.to_integer/1) do
    [k, v] -> [k, v]
    [k] -> [k, 1024]
    [] -> [1_000_000, 1024]
  end

defmodule ScaleBench do
  @per_txn 128

  def load(c, leader, keys, value_bytes) do
    filler = :rand.bytes(value_bytes - 8)

    0..(keys - 1)
    |> Enum.chunk_every(@per_txn)
    |> Task.async_stream(
      fn ids ->
        ops = for i <- ids, do: {:put, key(i), <<i::64, filler::binary>>}

        {:ok, _, true, _} =
          :erpc.call(leader, Synod.Store, :txn, [c.store, [], ops, [], [timeout: 60_000]], 70_000)
      end,
      max_concurrency: 4,
      timeout: 120_000,
      ordered: false
    )
    |> Stream.run()
  end

  def key(i), do: "k/" <> String.pad_leading(Integer.to_string(i), 8, "0")

  def snapshot_file(c, node) do
    case Path.wildcard(Path.join(Cluster.data_dir(c, node), "snapshot.*")) |> Enum.sort() do
      [] -> nil
      paths -> Enum.find(paths, &(not String.ends_with?(&1, ".tmp")))
    end
  end

  def tmp_file(c, node),
    do: Path.wildcard(Path.join(Cluster.data_dir(c, node), "snapshot.*.tmp")) |> List.first()

  def read_pieces(path) do
    t0 = System.monotonic_time()
    {:ok, f} = :file.open(path, [:raw, :read, :binary])
    read_loop(f, 0)
    :file.close(f)
    System.monotonic_time() - t0
  end

  defp read_loop(f, at) do
    case :file.pread(f, at, 1024 * 1024) do
      {:ok, bin} -> read_loop(f, at + byte_size(bin))
      :eof -> at
    end
  end

  def rss(node) do
    pid = :erpc.call(node, :os, :getpid, [])
    status = File.read!("/proc/#{pid}/status")
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, status)
    String.to_integer(kb) * 1024
  end

  # Sequential puts on `leader` until `stop?` holds (at least `min` of them).
  def put_latencies(c, leader, min, stop?) do
    value = :rand.bytes(1024)
    put_loop(c, leader, value, min, stop?, 0, [])
  end

  defp put_loop(c, leader, value, min, stop?, n, acc) do
    if n >= min and stop?.() do
      acc
    else
      t0 = System.monotonic_time()

      {:ok, _, _} =
        :erpc.call(leader, Synod.Store, :put, [c.store, "probe/#{rem(n, 100)}", value])

      us = System.convert_time_unit(System.monotonic_time() - t0, :native, :microsecond)
      put_loop(c, leader, value, min, stop?, n + 1, [us | acc])
    end
  end

  def pct(list, p) do
    sorted = Enum.sort(list)
    Enum.at(sorted, min(length(sorted) - 1, round(p / 100 * (length(sorted) - 1))))
  end

  def ms(native), do: System.convert_time_unit(native, :native, :microsecond) / 1000

  def mibps(bytes, native), do: bytes / 1_048_576 / (ms(native) / 1000)

  def loadavg, do: File.read!("/proc/loadavg") |> String.split() |> Enum.take(3) |> Enum.join(" ")

  def fmt(x), do: :erlang.float_to_binary(x * 1.0, decimals: 1)
end

root = Path.join(System.tmp_dir!(), "synod-scalebench-#{System.unique_integer([:positive])}")
# one compaction every 2,000 entries: several during the load (each one
# streams the whole store so far), and one after it for the snapshot figure
snapshot_every = 2_000

c =
  Cluster.start(3,
    data_root: root,
    prefix: "scaleb",
    store: :scalebench,
    store_opts: [snapshot_every: snapshot_every]
  )

try do
  IO.puts("load average at start: #{ScaleBench.loadavg()}; #{keys} keys x #{value_bytes} B")
  leader = Cluster.wait_leader(c, c.nodes)
  rss_empty = Map.new(c.nodes, &{&1, ScaleBench.rss(&1)})

  t0 = System.monotonic_time()
  ScaleBench.load(c, leader, keys, value_bytes)
  load_t = System.monotonic_time() - t0
  value_mib = keys * value_bytes / 1_048_576

  IO.puts(
    "load: #{keys} keys in #{ScaleBench.fmt(ScaleBench.ms(load_t) / 1000)} s " <>
      "(#{round(keys / (ScaleBench.ms(load_t) / 1000))} keys/s, #{ScaleBench.fmt(ScaleBench.mibps(keys * value_bytes, load_t))} MiB/s of values)"
  )

  # -- snapshot: push the leader past its next compaction and time it
  leader = Cluster.wait_leader(c, c.nodes)
  deadline = System.monotonic_time(:millisecond) + 600_000
  # a compaction started during the load finishes first
  Synod.Test.Stats.wait(fn -> ScaleBench.tmp_file(c, leader) == nil end, deadline, 5)
  before = ScaleBench.snapshot_file(c, leader)

  pusher =
    Task.async(fn ->
      ScaleBench.put_latencies(c, leader, 1, fn -> ScaleBench.tmp_file(c, leader) != nil end)
    end)

  started = Synod.Test.Stats.wait(fn -> ScaleBench.tmp_file(c, leader) != nil end, deadline, 1)
  Task.await(pusher, 600_000)

  placed =
    Synod.Test.Stats.wait(
      fn ->
        (f = ScaleBench.snapshot_file(c, leader)) != nil and f != before and
          ScaleBench.tmp_file(c, leader) == nil
      end,
      deadline,
      1
    )

  src = ScaleBench.snapshot_file(c, leader)
  bytes = File.stat!(src).size
  copy_t = Synod.Test.Stats.copy_fsync(src, Path.join(root, "copy.bin"))

  IO.puts(
    "snapshot: #{ScaleBench.fmt(bytes / 1_048_576)} MiB in #{ScaleBench.fmt(ScaleBench.ms(placed - started))} ms " <>
      "(#{ScaleBench.fmt(ScaleBench.mibps(bytes, placed - started))} MiB/s); File.copy+fsync #{ScaleBench.fmt(ScaleBench.ms(copy_t))} ms " <>
      "(#{ScaleBench.fmt(ScaleBench.mibps(bytes, copy_t))} MiB/s); ratio #{:erlang.float_to_binary(ScaleBench.ms(placed - started) / ScaleBench.ms(copy_t), decimals: 2)}"
  )

  rss_full = Map.new(c.nodes, &{&1, ScaleBench.rss(&1)})

  for n <- c.nodes do
    per_key = (rss_full[n] - rss_empty[n]) / keys

    IO.puts(
      "RSS #{n}#{if n == leader, do: " (leader)", else: ""}: empty #{ScaleBench.fmt(rss_empty[n] / 1_048_576)} MiB, " <>
        "full #{ScaleBench.fmt(rss_full[n] / 1_048_576)} MiB (#{ScaleBench.fmt(per_key)} B per key of #{value_bytes} B value; " <>
        "values alone #{ScaleBench.fmt(value_mib)} MiB)"
    )
  end

  # -- put latency with nothing streaming (baseline), then during catch-up
  quiet = ScaleBench.put_latencies(c, leader, 2_000, fn -> true end)

  victim = hd(c.nodes -- [leader])
  Cluster.kill(c, victim)
  File.rm_rf!(Cluster.data_dir(c, victim))
  c = Cluster.restart(c, victim)
  start = System.monotonic_time()
  deadline = System.monotonic_time(:millisecond) + 1_800_000

  streaming =
    Task.async(fn ->
      ScaleBench.put_latencies(c, leader, 50, fn ->
        ScaleBench.snapshot_file(c, victim) != nil
      end)
    end)

  done =
    Synod.Test.Stats.wait(
      fn -> Synod.Test.Raft.caught_up?(c.store, victim, leader) end,
      deadline,
      5
    )

  during = Task.await(streaming, 1_800_000)

  copy_t =
    Synod.Test.Stats.copy_fsync(ScaleBench.snapshot_file(c, leader), Path.join(root, "copy.bin"))

  IO.puts(
    "catch-up of a wiped follower: #{ScaleBench.fmt(ScaleBench.ms(done - start) / 1000)} s " <>
      "(#{ScaleBench.fmt(ScaleBench.mibps(bytes, done - start))} MiB/s); File.copy+fsync #{ScaleBench.fmt(ScaleBench.ms(copy_t))} ms; " <>
      "ratio #{:erlang.float_to_binary(ScaleBench.ms(done - start) / ScaleBench.ms(copy_t), decimals: 2)}"
  )

  IO.puts(
    "leader put latency, nothing streaming (#{length(quiet)} puts): p50 #{ScaleBench.pct(quiet, 50)} us, p99 #{ScaleBench.pct(quiet, 99)} us"
  )

  IO.puts(
    "leader put latency while the snapshot streams (#{length(during)} puts): p50 #{ScaleBench.pct(during, 50)} us, " <>
      "p99 #{ScaleBench.pct(during, 99)} us; p99 ratio #{:erlang.float_to_binary(ScaleBench.pct(during, 99) / max(ScaleBench.pct(quiet, 99), 1), decimals: 2)}"
  )

  IO.puts(
    "RSS of the caught-up follower: #{ScaleBench.fmt(ScaleBench.rss(victim) / 1_048_576)} MiB"
  )

  # -- restart recovery on its own files
  Cluster.kill(c, victim)
  # from before the restart: the member restores its store in its init,
  # so the time includes starting the peer VM
  start = System.monotonic_time()
  c = Cluster.restart(c, victim)

  done =
    Synod.Test.Stats.wait(
      fn -> Synod.Test.Raft.caught_up?(c.store, victim, leader) end,
      deadline,
      5
    )

  read_t = ScaleBench.read_pieces(ScaleBench.snapshot_file(c, victim))

  IO.puts(
    "restart recovery (follower, own files): #{ScaleBench.fmt(ScaleBench.ms(done - start) / 1000)} s; " <>
      "reading the snapshot file in 1 MiB pieces #{ScaleBench.fmt(ScaleBench.ms(read_t))} ms; " <>
      "ratio #{:erlang.float_to_binary(ScaleBench.ms(done - start) / max(ScaleBench.ms(read_t), 0.001), decimals: 2)}"
  )

  IO.puts("load average at end: #{ScaleBench.loadavg()}")
after
  Cluster.stop(c)
  File.rm_rf(root)
end
