# 2 BEAM members + 1 C witness against 3 BEAM members, in the same run, on
# real :peer nodes and the real C node (fsync on everywhere).
#
#   MIX_ENV=test mix run bench/witness_bench.exs [FAILOVER_TRIALS] [COMMANDS]
#
# 1. Commit latency: COMMANDS sequential commands sent from this VM to the
#    leader's node (one erpc each, the same for both), p50 and p99; the
#    ratio is 2+1 over 3 BEAM.
# 2. Failover: kill -9 of the leader's VM, time until a survivor's member
#    reports itself leader (polled every 2 ms from this VM); a fresh group
#    per trial. Median and p99, ratio 2+1 over 3 BEAM.
# 3. The witness: resident memory (VmRSS) after the run and CPU time
#    (utime + stime from /proc) per 1,000 commands.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster

[trials, commands] =
  case System.argv() do
    [t, c] -> [String.to_integer(t), String.to_integer(c)]
    [t] -> [String.to_integer(t), 1_000]
    [] -> [10, 1_000]
  end

defmodule WitnessBench do
  defdelegate pct(list, p), to: Synod.Test.Stats
  defdelegate ms(us), to: Synod.Test.Stats

  # {peers, beam_nodes, leader, witness_pid | nil}
  def start(kind, dir) do
    group = :"wb#{System.unique_integer([:positive])}"
    n = if kind == :witness, do: 2, else: 3
    peers = LocalCluster.start(n, prefix: "wb")
    nodes = Enum.map(peers, &elem(&1, 1))

    {wpid, opts} =
      if kind == :witness do
        w = :"synod_wb#{System.unique_integer([:positive])}@127.0.0.1"
        File.mkdir_p!(dir)

        {:ok, pid} =
          Synod.CNode.start_link(
            name: w,
            witness: [group],
            data_dir: Path.join(dir, "witness"),
            log_level: :warn
          )

        Process.unlink(pid)
        {pid, [witnesses: [w]]}
      else
        {nil, []}
      end

    :ok = Synod.Raft.start_group(group, nodes, dir, [machine: Synod.Raft.KV] ++ opts)
    leader = Synod.Test.Raft.wait_leader(group, nodes, 20_000)
    {group, peers, nodes, leader, wpid}
  end

  def stop({_group, peers, _nodes, _leader, wpid}) do
    LocalCluster.stop(peers)
    if wpid && Process.alive?(wpid), do: Synod.CNode.stop(wpid)
  end

  def latency({group, _, _, leader, _}, commands) do
    Synod.Test.Stats.timed(commands, fn i ->
      {:ok, _} = :erpc.call(leader, Synod.Raft, :command, [group, {:put, i, i}])
    end)
  end

  def failover({group, _, nodes, leader, _}) do
    survivors = nodes -- [leader]
    {:ok, _} = :erpc.call(leader, Synod.Raft, :command, [group, {:put, :warm, 1}])
    Process.sleep(200)
    t0 = System.monotonic_time(:microsecond)
    LocalCluster.kill(leader)
    wait_leader(group, survivors, t0)
  end

  defp wait_leader(group, survivors, t0) do
    if Enum.any?(survivors, &(:erpc.call(&1, Synod.Raft, :leader?, [group], 1_000) == true)) do
      System.monotonic_time(:microsecond) - t0
    else
      if System.monotonic_time(:microsecond) - t0 > 30_000_000, do: raise("no leader in 30 s")
      Process.sleep(2)
      wait_leader(group, survivors, t0)
    end
  end

  def proc(os_pid) do
    status = File.read!("/proc/#{os_pid}/status")
    [_, rss] = Regex.run(~r/VmRSS:\s+(\d+) kB/, status)
    stat = File.read!("/proc/#{os_pid}/stat")
    # fields after the ")" of the command name: state is field 3
    rest = stat |> String.split(") ") |> List.last() |> String.split(" ")
    utime = String.to_integer(Enum.at(rest, 11))
    stime = String.to_integer(Enum.at(rest, 12))
    {String.to_integer(rss), utime + stime}
  end
end

root = Path.join(System.tmp_dir!(), "synod-witness-bench-#{System.unique_integer([:positive])}")
hz = 100

IO.puts("# witness bench: #{commands} sequential commands, #{trials} failover trials per setup")

lat =
  for kind <- [:beam3, :witness], into: %{} do
    c = WitnessBench.start(kind, Path.join(root, "lat-#{kind}"))
    _warm = WitnessBench.latency(c, 100)
    before = if kind == :witness, do: WitnessBench.proc(Synod.CNode.os_pid(elem(c, 4)))
    us = WitnessBench.latency(c, commands)
    after_ = if kind == :witness, do: WitnessBench.proc(Synod.CNode.os_pid(elem(c, 4)))
    WitnessBench.stop(c)
    {kind, {us, before, after_}}
  end

{b3, _, _} = lat[:beam3]
{w, {_, cpu0}, {rss, cpu1}} = lat[:witness]

IO.puts(
  "commit latency 3 BEAM     p50 #{WitnessBench.ms(WitnessBench.pct(b3, 50))} ms  p99 #{WitnessBench.ms(WitnessBench.pct(b3, 99))} ms"
)

IO.puts(
  "commit latency 2 + witness p50 #{WitnessBench.ms(WitnessBench.pct(w, 50))} ms  p99 #{WitnessBench.ms(WitnessBench.pct(w, 99))} ms"
)

IO.puts(
  "  ratio (2+1 / 3 BEAM): p50 #{Float.round(WitnessBench.pct(w, 50) / WitnessBench.pct(b3, 50), 2)}  p99 #{Float.round(WitnessBench.pct(w, 99) / WitnessBench.pct(b3, 99), 2)}"
)

IO.puts(
  "witness: VmRSS #{rss} kB after #{commands + 100} commands; CPU #{Float.round((cpu1 - cpu0) * 1000 / hz * 1000 / commands, 1)} ms per 1,000 commands"
)

if trials > 0 do
  fo =
    for kind <- [:beam3, :witness], into: %{} do
      times =
        for t <- 1..trials do
          c = WitnessBench.start(kind, Path.join(root, "fo-#{kind}-#{t}"))
          us = WitnessBench.failover(c)
          WitnessBench.stop(c)
          us
        end

      {kind, times}
    end

  for kind <- [:beam3, :witness] do
    IO.puts(
      "failover #{kind}: median #{WitnessBench.ms(WitnessBench.pct(fo[kind], 50))} ms  p99 #{WitnessBench.ms(WitnessBench.pct(fo[kind], 99))} ms"
    )
  end

  IO.puts(
    "  ratio (2+1 / 3 BEAM): median #{Float.round(WitnessBench.pct(fo[:witness], 50) / WitnessBench.pct(fo[:beam3], 50), 2)}"
  )
end

File.rm_rf(root)
