# Snapshot transfer benchmark on 3 real :peer nodes (a Synod.Store, fsync on).
#
#   MIX_ENV=test mix run bench/snapshot_bench.exs [MIB] [ROUNDS] [CHUNK_KIB]
#
# Builds a store of MIB MiB (default 256; values of 512 KiB), then ROUNDS
# times (default 3): kills a follower, wipes its data dir, restarts it and
# times until it has caught up through a chunked snapshot (the leader reads
# chunks of CHUNK_KIB KiB from its snapshot file (default: the
# `snapshot_chunk` default of Synod.Raft), 4 in flight; the follower writes
# them to recv.snapshot, fsyncs, checks the CRC, installs and restores its
# store). Two figures per round, both in MiB/s of snapshot file:
#
#   transfer  restart -> the follower's snapshot file is in place (chunks
#             sent, written, fsynced, checked, renamed)
#   catch-up  restart -> the follower has applied the leader's commit index
#             (also restoring the store from the file)
#
# Baseline in the same run, each round: File.copy/2 of the leader's snapshot
# file to a new file on the same disk plus an fsync (the floor under moving
# those bytes durably on this machine). Medians over the rounds.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.Test.{Cluster, Stats}

[mib, rounds, chunk_opts] =
  case Enum.map(System.argv(), &String.to_integer/1) do
    [m, r, k] -> [m, r, [snapshot_chunk: k * 1024]]
    [m, r] -> [m, r, []]
    [m] -> [m, 3, []]
    [] -> [256, 3, []]
  end

defmodule SnapshotBench do
  @value 512 * 1024

  def fill(c, leader, mib) do
    filler = :binary.copy(:rand.bytes(1024), div(@value, 1024))

    1..puts(mib)
    |> Task.async_stream(
      fn i ->
        key = "k/" <> String.pad_leading(Integer.to_string(i), 6, "0")

        {:ok, _, _} =
          :erpc.call(
            leader,
            Synod.Store,
            :put,
            [c.store, key, <<i::32, filler::binary>>, [timeout: 60_000]],
            70_000
          )
      end,
      max_concurrency: 4,
      timeout: 120_000
    )
    |> Stream.run()
  end

  def snapshot_every(mib), do: mib |> puts() |> div(2) |> max(1) |> min(50)

  defp puts(mib), do: div(mib * 1024 * 1024, @value)

  def snapshot_file(c, node) do
    dir = Cluster.data_dir(c, node)

    case Path.wildcard(Path.join(dir, "snapshot.*")) do
      [path] -> path
      _ -> nil
    end
  end

  def mibps(bytes, native),
    do: bytes / 1_048_576 / (System.convert_time_unit(native, :native, :microsecond) / 1.0e6)

  def fmt(x), do: :erlang.float_to_binary(x * 1.0, decimals: 1)
end

root = Path.join(System.tmp_dir!(), "synod-snapbench-#{System.unique_integer([:positive])}")

c =
  Cluster.start(3,
    data_root: root,
    prefix: "snapb",
    store: :snapbench,
    # A snapshot every 50 applied entries, or every half of the puts when
    # the store is small (8 MiB is 16 puts), so one covers the whole fill.
    store_opts: [snapshot_every: SnapshotBench.snapshot_every(mib)] ++ chunk_opts
  )

try do
  leader = Cluster.wait_leader(c, c.nodes)
  t0 = System.monotonic_time(:millisecond)
  SnapshotBench.fill(c, leader, mib)
  IO.puts("store of #{mib} MiB built in #{System.monotonic_time(:millisecond) - t0} ms")
  IO.puts("snapshot_chunk: #{inspect(Keyword.get(chunk_opts, :snapshot_chunk, :default))}")

  # One snapshot covering all of it on the leader.
  Process.sleep(2_000)

  {results, _c} =
    Enum.map_reduce(1..rounds, c, fn round, c ->
      leader = Cluster.wait_leader(c, c.nodes)
      victim = hd(c.nodes -- [leader])

      Synod.Test.Stats.wait(
        fn -> SnapshotBench.snapshot_file(c, leader) != nil end,
        System.monotonic_time(:millisecond) + 60_000
      )

      src = SnapshotBench.snapshot_file(c, leader)
      bytes = File.stat!(src).size
      copy = Synod.Test.Stats.copy_fsync(src, Path.join(root, "copy.bin"))

      Cluster.kill(c, victim)
      File.rm_rf!(Cluster.data_dir(c, victim))
      c = Cluster.restart(c, victim)
      start = System.monotonic_time()
      deadline = System.monotonic_time(:millisecond) + 300_000

      placed =
        Synod.Test.Stats.wait(
          fn -> SnapshotBench.snapshot_file(c, victim) != nil end,
          deadline
        )

      done =
        Synod.Test.Stats.wait(
          fn -> Synod.Test.Raft.caught_up?(c.store, victim, leader) end,
          deadline
        )

      r = %{
        bytes: bytes,
        transfer: SnapshotBench.mibps(bytes, placed - start),
        catchup: SnapshotBench.mibps(bytes, done - start),
        copy: SnapshotBench.mibps(bytes, copy)
      }

      IO.puts(
        "round #{round}: #{SnapshotBench.fmt(bytes / 1_048_576)} MiB snapshot: " <>
          "transfer #{SnapshotBench.fmt(r.transfer)} MiB/s, catch-up #{SnapshotBench.fmt(r.catchup)} MiB/s, " <>
          "File.copy+fsync #{SnapshotBench.fmt(r.copy)} MiB/s"
      )

      {r, c}
    end)

  med = fn key -> Stats.median(Enum.map(results, & &1[key])) end

  IO.puts("""

  medians over #{rounds} rounds (snapshot file #{SnapshotBench.fmt(hd(results).bytes / 1_048_576)} MiB):
    chunked transfer (restart -> snapshot file in place): #{SnapshotBench.fmt(med.(:transfer))} MiB/s
    catch-up (restart -> applied the leader's commit):     #{SnapshotBench.fmt(med.(:catchup))} MiB/s
    baseline File.copy + fsync of the same file:          #{SnapshotBench.fmt(med.(:copy))} MiB/s
    ratio transfer / baseline: #{:erlang.float_to_binary(med.(:transfer) / med.(:copy), decimals: 2)}
  """)
after
  Cluster.stop(c)
  File.rm_rf(root)
end
