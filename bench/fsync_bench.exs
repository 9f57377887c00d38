# fdatasync calls per command per member: 3 voters on real :peer nodes,
# fsync on.
#
#   MIX_ENV=test mix run bench/fsync_bench.exs [COMMANDS]
#
# How it counts: call tracing. On every member's VM the bench turns on
# `:erlang.trace_pattern(MFA, true, [:call_count])` for `:file.datasync/1`
# and `:file.sync/1` (Synod.Raft.Storage makes every log and snapshot fsync
# through one of them, on raw files), reads the counters before and after a
# run, and divides the difference by the number of commands. Directory
# fsyncs (`:synod_nif.fsync_dir/1`, made only when a snapshot is installed)
# are not counted; no snapshot is taken in these runs.
#
# Runs, each on a fresh group:
#   1. sequential Raft commands (Synod.Raft.KV) from the leader's node;
#   2. sequential store puts (Synod.Store.put/3) from the leader's node;
#   3. 16 concurrent clients of Raft commands (group commit: fewer fsyncs
#      than commands).
# The target is at most 1.1 fsync per sequential command per member (etcd
# 3.4: 1.08; RabbitMQ's ra: 1.0); the ratio printed is against 1.0, the
# fsync the entries themselves need.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster

commands =
  case System.argv() do
    [n] -> String.to_integer(n)
    [] -> 2_000
  end

defmodule FsyncBench do
  @fsyncs [{:file, :datasync, 1}, {:file, :sync, 1}]

  def count_on(nodes) do
    for n <- nodes,
        mfa <- @fsyncs,
        do: 1 = :erpc.call(n, :erlang, :trace_pattern, [mfa, true, [:call_count]])

    :ok
  end

  def counts(nodes) do
    Map.new(nodes, fn n ->
      total =
        Enum.sum(
          for mfa <- @fsyncs do
            {:call_count, c} = :erpc.call(n, :erlang, :trace_info, [mfa, :call_count])
            c || 0
          end
        )

      {n, total}
    end)
  end

  def start(tag, fun) do
    peers =
      LocalCluster.start(3,
        names: for(i <- 1..3, do: "#{tag}#{i}-#{System.unique_integer([:positive])}")
      )

    nodes = Enum.map(peers, &elem(&1, 1))
    leader = fun.(nodes)
    {peers, nodes, leader}
  end

  def report(label, nodes, leader, before, after_, ops) do
    per =
      for n <- [leader | nodes -- [leader]] do
        role = if n == leader, do: "leader", else: "follower"
        {role, (after_[n] - before[n]) / ops}
      end

    text = Enum.map_join(per, ", ", fn {role, v} -> "#{role} #{Float.round(v, 3)}" end)
    worst = per |> Enum.map(&elem(&1, 1)) |> Enum.max()

    IO.puts(
      "#{label}: fdatasync per command per member: #{text} (worst #{Float.round(worst, 2)}x the 1.0 floor)"
    )
  end
end

IO.puts("fsync count benchmark: 3 voters on loopback, #{commands} commands per run")
dir = Path.join(System.tmp_dir!(), "synod-fsync-bench-#{System.unique_integer([:positive])}")

# 1 and 3: Raft commands on the trivial machine
{peers, nodes, leader} =
  FsyncBench.start("fb", fn nodes ->
    :ok =
      Synod.Raft.start_group(:fsync_bench, nodes, Path.join(dir, "raft"), machine: Synod.Raft.KV)

    Synod.Test.Raft.wait_leader(:fsync_bench, nodes)
  end)

FsyncBench.count_on(nodes)
_ = :erpc.call(leader, Synod.Test.Raft, :latency, [:fsync_bench, 100], 120_000)
before = FsyncBench.counts(nodes)
times = :erpc.call(leader, Synod.Test.Raft, :latency, [:fsync_bench, commands], 600_000)
after_ = FsyncBench.counts(nodes)
FsyncBench.report("sequential Raft commands", nodes, leader, before, after_, commands)
IO.puts("  command p50 #{Synod.Test.Stats.ms(Synod.Test.Stats.pct(times, 50))} ms")

before = FsyncBench.counts(nodes)
per_client = div(commands, 4)
rate = :erpc.call(leader, Synod.Test.Raft, :throughput, [:fsync_bench, 16, per_client], 600_000)
after_ = FsyncBench.counts(nodes)
FsyncBench.report("16 clients (group commit)", nodes, leader, before, after_, 16 * per_client)
IO.puts("  #{rate} commands/s")
LocalCluster.stop(peers)

# 2: store puts
{peers, nodes, leader} =
  FsyncBench.start("fs", fn nodes ->
    Synod.Test.Coord.start_store(:fsync_store, nodes, Path.join(dir, "store"))
  end)

FsyncBench.count_on(nodes)

put = fn i ->
  {:ok, _, _} = :erpc.call(leader, Synod.Store, :put, [:fsync_store, "k", Integer.to_string(i)])
end

Enum.each(1..100, put)
before = FsyncBench.counts(nodes)
Enum.each(1..commands, put)
after_ = FsyncBench.counts(nodes)
FsyncBench.report("sequential store puts", nodes, leader, before, after_, commands)
LocalCluster.stop(peers)
File.rm_rf(dir)
