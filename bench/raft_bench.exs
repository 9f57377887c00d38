# Raft driver benchmark on 3 real :peer nodes (3 voters, fsync on).
#
#   MIX_ENV=test mix run bench/raft_bench.exs [FAILOVER_TRIALS] [COMMANDS]
#
# 1. Failover: kill -9 the leader's VM and time until every survivor's
#    leader watch names the same new leader (the watch messages come to this
#    process; the clock is this VM's monotonic clock). The killed node is
#    restarted (same name, same directory) and caught up before the next
#    trial. Baseline in the same run: the same driver with
#    `fast_failover: false`, which waits for the election timeout as plain
#    Raft does (tick 25 ms, election timeout 250-500 ms).
# 2. Commit latency: sequential commands from a follower's node and from the
#    leader's node, p50 and p99. Baseline: write + fdatasync of the same
#    bytes on this machine (the floor under one durable commit).
# 3. Throughput: 16 concurrent clients, with group commit (`batch: true`)
#    and without; with group commit also 64 clients and the pipelined API
#    (`Synod.Raft.Pipeline`, one client, 1,000 commands in flight), as a
#    ratio to the 16 synchronous clients of the same run.
#
# 4. Counts, by call tracing on each member (`:erlang.trace_pattern/3`,
#    `[:call_count]`): per command, `:synod_nif.raft_step/2` (messages
#    received), `raft_ready/1` (Ready rounds, with the empty one ending each
#    drain) and `:file.datasync/1`, for the sequential and pipelined runs.
#
# FAILOVER_TRIALS=0 skips part 1 (e.g. `mix run bench/raft_bench.exs 0 2000`).
# RAFT_BENCH_FSYNC_WRITER=1 runs parts 2-4 with `fsync_writer: true` (the
# member's fdatasync in Synod.Raft.Syncer beside it; docs/raft.md "64
# clients (issue 18, branch raft64)").

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster

[trials, commands] =
  case System.argv() do
    [t, c] -> [String.to_integer(t), String.to_integer(c)]
    [t] -> [String.to_integer(t), 2_000]
    [] -> [50, 2_000]
  end

defmodule RaftBench do
  defdelegate pct(list, p), to: Synod.Test.Stats
  defdelegate ms(us), to: Synod.Test.Stats

  def start(names, dir, group, opts) do
    peers = LocalCluster.start(length(names), names: names)
    nodes = Enum.map(peers, &elem(&1, 1))
    :ok = Synod.Raft.start_group(group, nodes, dir, [machine: Synod.Raft.KV] ++ opts)
    {peers, nodes, Synod.Test.Raft.wait_leader(group, nodes)}
  end

  # Kills the leader and returns microseconds until every survivor knows the
  # same new leader, then brings the killed node back.
  def failover(group, nodes, leader, names, dir, opts) do
    survivors = nodes -- [leader]

    for n <- survivors,
        do: :ok = :erpc.call(n, Synod.Raft, :add_leader_watch, [group, {:b, n}, self()])

    flush()
    t0 = System.monotonic_time(:microsecond)
    LocalCluster.kill(leader)
    t = wait_new_leader(survivors, leader, %{}, t0)

    name = Enum.at(names, Enum.find_index(nodes, &(&1 == leader)))
    [peer] = LocalCluster.start(1, names: [name])

    {:ok, _} =
      :erpc.call(leader, Synod.Raft, :start_member, [
        [
          name: group,
          voters: nodes,
          data_dir: Path.join(dir, Atom.to_string(leader)),
          machine: Synod.Raft.KV
        ] ++ opts
      ])

    new_leader = Synod.Test.Raft.wait_leader(group, nodes, 30_000)
    {:ok, _} = Synod.Raft.command(group, {:incr, :trial, 1}, timeout: 10_000)
    Synod.Test.Raft.wait_converged(group, nodes, 30_000)
    for n <- survivors, do: :erpc.call(n, Synod.Raft, :remove_leader_watch, [group, {:b, n}])
    {t, new_leader, peer}
  end

  defp wait_new_leader(survivors, old, known, t0) do
    if map_size(known) == length(survivors) and length(Enum.uniq(Map.values(known))) == 1 do
      System.monotonic_time(:microsecond) - t0
    else
      receive do
        {:synod_leader_watch, _, {:b, n}, _event, _before, %{leader: l}}
        when l not in [nil, old] ->
          wait_new_leader(survivors, old, Map.put(known, n, l), t0)

        {:synod_leader_watch, _, _, _, _, _} ->
          wait_new_leader(survivors, old, known, t0)
      after
        10_000 -> raise "no new leader within 10 s"
      end
    end
  end

  def flush do
    receive do
      {:synod_leader_watch, _, _, _, _, _} -> flush()
    after
      0 -> :ok
    end
  end

  def run_failovers(label, trials, opts) do
    dir = Path.join(System.tmp_dir!(), "synod-raft-bench-#{System.unique_integer([:positive])}")
    names = for i <- 1..3, do: "rb#{i}-#{System.unique_integer([:positive])}"
    group = :bench_failover
    {peers, nodes, leader} = start(names, dir, group, opts)

    {times, _, peers} =
      Enum.reduce(1..trials, {[], leader, peers}, fn _, {acc, leader, peers} ->
        {t, new_leader, peer} = failover(group, nodes, leader, names, dir, opts)
        {[t | acc], new_leader, [peer | peers]}
      end)

    LocalCluster.stop(peers)
    File.rm_rf(dir)
    p50 = pct(times, 50)
    p99 = pct(times, 99)

    IO.puts(
      "#{label}: #{trials} trials, median #{ms(p50)} ms, p99 #{ms(p99)} ms, max #{ms(Enum.max(times))} ms"
    )

    p50
  end

  def latency(node, group, n),
    do: :erpc.call(node, Synod.Test.Raft, :latency, [group, n], 120_000)

  def throughput(node, group, clients, per_client),
    do: :erpc.call(node, Synod.Test.Raft, :throughput, [group, clients, per_client], 600_000)

  # Per member, the calls into the core and the fsyncs made while `fun`
  # runs, by call tracing (`:erlang.trace_pattern/3` with `[:call_count]` on
  # each member's VM): raft_step = messages received, raft_ready = Ready
  # rounds asked for (including the last, empty, one of each drain).
  @counted [
    {:synod_nif, :raft_step, 2},
    {:synod_nif, :raft_ready, 1},
    {:file, :datasync, 1}
  ]
  def counted(nodes, fun) do
    for n <- nodes,
        mfa <- @counted,
        do: :erpc.call(n, :erlang, :trace_pattern, [mfa, true, [:call_count]])

    result = fun.()

    counts =
      Map.new(nodes, fn n ->
        {n,
         for mfa <- @counted do
           {:call_count, c} = :erpc.call(n, :erlang, :trace_info, [mfa, :call_count])
           :erpc.call(n, :erlang, :trace_pattern, [mfa, false, [:call_count]])
           c || 0
         end}
      end)

    {result, counts}
  end

  def print_counts(label, leader, counts, commands) do
    per = fn c -> Float.round(c / commands, 3) end

    rows =
      for {n, [steps, readies, syncs]} <- Enum.sort_by(counts, fn {n, _} -> n != leader end) do
        role = if n == leader, do: "leader", else: "follower"
        "#{role} #{per.(steps)} steps, #{per.(readies)} raft_ready, #{per.(syncs)} fdatasync"
      end

    IO.puts("  per command, #{label}: " <> Enum.join(rows, "; "))
  end

  def fsync_floor(n) do
    path = Path.join(System.tmp_dir!(), "synod-fsync-#{System.unique_integer([:positive])}")
    {:ok, f} = :file.open(path, [:raw, :binary, :append])
    bytes = :erlang.term_to_binary({:c, {:put, 1, 1}})

    times =
      for _ <- 1..n do
        t0 = System.monotonic_time(:microsecond)
        :ok = :file.write(f, bytes)
        :ok = :file.datasync(f)
        System.monotonic_time(:microsecond) - t0
      end

    :file.close(f)
    File.rm(path)
    times
  end
end

IO.puts(
  "Synod Raft benchmark: 3 voters on loopback, #{System.schedulers_online()} schedulers, " <>
    "fsync_writer: #{System.get_env("RAFT_BENCH_FSYNC_WRITER") == "1"}"
)

# ── failover ──
if trials > 0 do
  fast = RaftBench.run_failovers("failover, nodedown-triggered (Synod)", trials, [])

  slow =
    RaftBench.run_failovers("failover, election timeout only (baseline)", max(div(trials, 3), 5),
      fast_failover: false
    )

  IO.puts("failover ratio (baseline / Synod, medians): #{Float.round(slow / fast, 1)}x")
end

# ── commit latency and throughput ──
for batch <- [true, false] do
  dir = Path.join(System.tmp_dir!(), "synod-raft-bench-#{System.unique_integer([:positive])}")
  names = for i <- 1..3, do: "rc#{i}-#{System.unique_integer([:positive])}"
  writer = System.get_env("RAFT_BENCH_FSYNC_WRITER") == "1"

  {peers, nodes, leader} =
    RaftBench.start(names, dir, :bench_commit, batch: batch, fsync_writer: writer)

  follower = hd(nodes -- [leader])

  if batch do
    floor = RaftBench.fsync_floor(commands)

    {on_leader, counts} =
      RaftBench.counted(nodes, fn -> RaftBench.latency(leader, :bench_commit, commands) end)

    via_follower = RaftBench.latency(follower, :bench_commit, commands)
    f50 = RaftBench.pct(floor, 50)

    IO.puts(
      "fsync floor (write + fdatasync): p50 #{RaftBench.ms(f50)} ms, p99 #{RaftBench.ms(RaftBench.pct(floor, 99))} ms"
    )

    for {label, times} <- [
          {"from the leader's node", on_leader},
          {"from a follower's node", via_follower}
        ] do
      p50 = RaftBench.pct(times, 50)

      IO.puts(
        "sequential command #{label}: p50 #{RaftBench.ms(p50)} ms, p99 #{RaftBench.ms(RaftBench.pct(times, 99))} ms " <>
          "(#{Float.round(p50 / max(f50, 1), 1)}x the fsync floor)"
      )
    end

    RaftBench.print_counts("sequential from the leader's node", leader, counts, commands)
  end

  rate = RaftBench.throughput(leader, :bench_commit, 16, div(commands, 2))
  IO.puts("16 clients, batch: #{batch}: #{rate} commands/s")
  Process.put({:rate, batch}, rate)

  if batch do
    rate64 = RaftBench.throughput(follower, :bench_commit, 64, div(commands, 4))

    IO.puts(
      "64 clients from a follower's node: #{rate64} commands/s (#{Float.round(rate64 / rate, 2)}x 16 clients)"
    )

    {piped, counts} =
      RaftBench.counted(nodes, fn ->
        :erpc.call(
          follower,
          Synod.Test.Raft,
          :pipelined_rate,
          [:bench_commit, 10 * commands, 1_000],
          600_000
        )
      end)

    IO.puts(
      "pipelined, 1 client on a follower's node, 1,000 in flight: #{piped} commands/s " <>
        "(#{Float.round(piped / rate, 2)}x 16 synchronous clients)"
    )

    RaftBench.print_counts("pipelined", leader, counts, 10 * commands)
  end

  LocalCluster.stop(peers)
  File.rm_rf(dir)
end

IO.puts(
  "group commit ratio (batch / no batch): #{Float.round(Process.get({:rate, true}) / Process.get({:rate, false}), 2)}x"
)
