# Where a Raft command's work goes, counted rather than timed (issue 18):
# 3 voters on real :peer nodes (fsync on, the KV machine), the client on
# this VM (a node with no member).
#
#   MIX_ENV=test mix run bench/raft_profile.exs [COMMANDS] [TOP]
#
# 1. Reductions per command of the leader's member, each follower's member
#    and the client process, for COMMANDS (default 20,000) pipelined
#    commands (`Synod.Raft.Pipeline`, 1,000 in flight) and COMMANDS / 10
#    sequential ones. Load-independent: a reduction is a unit of work, not
#    a time. The baseline in the same run is the bare client loop (the
#    client's reductions per command).
# 2. Function calls per command of the leader's member (and a follower's),
#    with `:eprof` on that one process, the TOP (default 25) most called,
#    and the share of the member's profiled time in the NIF
#    (`:synod_nif.*`, the core's step/ready/propose) against Elixir and
#    Erlang code. The times are under call-time tracing (which inflates
#    every call by about the same amount), so read them as shares.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster

[commands, top] =
  case System.argv() do
    [c, t] -> [String.to_integer(c), String.to_integer(t)]
    [c] -> [String.to_integer(c), 25]
    [] -> [20_000, 25]
  end

defmodule RaftProfile do
  @group :bench_profile

  def group, do: @group

  def member(node), do: :erpc.call(node, Process, :whereis, [Synod.Raft.member_name(@group)])

  def reductions(node, pid) do
    {:reductions, r} = :erpc.call(node, Process, :info, [pid, :reductions])
    r
  end

  def pipelined(n, window) do
    pipe = Synod.Raft.Pipeline.new(@group, window: window, timeout: 60_000)
    pipe = loop(pipe, 1, n)
    drain(pipe)
  end

  defp loop(pipe, i, n) when i > n, do: pipe

  defp loop(pipe, i, n) do
    case Synod.Raft.Pipeline.send(pipe, {:put, {:p, i}, i}) do
      {:ok, _ref, pipe} ->
        loop(pipe, i + 1, n)

      {:error, :busy} ->
        {:ok, _ref, {:ok, _}, pipe} = Synod.Raft.Pipeline.next(pipe, 60_000)
        loop(pipe, i, n)
    end
  end

  defp drain(pipe) do
    case Synod.Raft.Pipeline.next(pipe, 60_000) do
      {:ok, _ref, {:ok, _}, pipe} -> drain(pipe)
      {:timeout, _} -> :ok
    end
  end

  def sequential(n) do
    for i <- 1..n, do: {:ok, _} = Synod.Raft.command(@group, {:put, {:s, i}, i})
    :ok
  end

  # Reductions per command of every member and of this process while `fun`
  # runs `n` commands.
  def per_command(nodes, pids, n, fun) do
    before = Enum.map(Enum.zip(nodes, pids), fn {node, pid} -> reductions(node, pid) end)
    {:reductions, c0} = Process.info(self(), :reductions)
    fun.()
    {:reductions, c1} = Process.info(self(), :reductions)
    after_ = Enum.map(Enum.zip(nodes, pids), fn {node, pid} -> reductions(node, pid) end)
    members = Enum.zip_with(after_, before, fn a, b -> (a - b) / n end)
    {members, (c1 - c0) / n}
  end

  # eprof of one process on `node` while `fun` runs; returns the parsed rows
  # [{function, calls, microseconds}] of its analysis.
  def eprof(node, pid, fun) do
    log = Path.join(System.tmp_dir!(), "synod-eprof-#{System.unique_integer([:positive])}.txt")
    {:ok, _} = :erpc.call(node, :eprof, :start, [])
    :profiling = :erpc.call(node, :eprof, :start_profiling, [[pid]])
    fun.()
    :profiling_stopped = :erpc.call(node, :eprof, :stop_profiling, [])
    :ok = :erpc.call(node, :eprof, :log, [String.to_charlist(log)])
    # eprof prints its analysis to the caller's group leader too: a StringIO
    {:ok, quiet} = StringIO.open("")
    me = self()

    spawn(fn ->
      Process.group_leader(self(), quiet)
      :erpc.call(node, :eprof, :analyze, [:total, [{:sort, :calls}]])
      send(me, :analyzed)
    end)

    receive do
      :analyzed -> :ok
    end

    :erpc.call(node, :eprof, :stop, [])
    text = File.read!(log)
    File.rm(log)
    parse(text)
  end

  defp parse(text) do
    for line <- String.split(text, "\n"),
        [fun, calls, _pct, us | _] <- [String.split(line)],
        match?({_, ""}, Integer.parse(calls)),
        match?({_, ""}, Integer.parse(us)),
        String.contains?(fun, "/") do
      {fun, String.to_integer(calls), String.to_integer(us)}
    end
  end

  def print_profile(label, rows, n, top) do
    total = rows |> Enum.map(&elem(&1, 2)) |> Enum.sum()

    nif =
      for {f, _, us} <- rows, String.starts_with?(f, "synod_nif:"), reduce: 0, do: (a -> a + us)

    calls = rows |> Enum.map(&elem(&1, 1)) |> Enum.sum()

    IO.puts(
      "#{label}: #{Float.round(calls / n, 1)} calls per command; NIF #{pct(nif, total)}% of the profiled time " <>
        "(#{Float.round(nif / n, 2)} us/command), the rest #{pct(total - nif, total)}%"
    )

    # the most called, then the most time
    by_calls = rows |> Enum.sort_by(&(-elem(&1, 1))) |> Enum.take(top)
    by_time = rows |> Enum.sort_by(&(-elem(&1, 2))) |> Enum.take(top)

    for {f, c, us} <- Enum.uniq(by_calls ++ by_time) do
      IO.puts(
        "  #{String.pad_trailing(f, 60)} #{String.pad_leading(fmt(c / n), 8)} /cmd  #{pct(us, total)}% time"
      )
    end
  end

  defp fmt(x), do: :erlang.float_to_binary(x / 1, decimals: 3)
  defp pct(_a, 0), do: 0.0
  defp pct(a, b), do: Float.round(100 * a / b, 1)
end

IO.puts("Synod Raft profile: 3 voters on loopback, #{System.schedulers_online()} schedulers")

dir = Path.join(System.tmp_dir!(), "synod-raft-profile-#{System.unique_integer([:positive])}")
names = for i <- 1..3, do: "rp#{i}-#{System.unique_integer([:positive])}"
peers = LocalCluster.start(3, names: names)
nodes = Enum.map(peers, &elem(&1, 1))
group = RaftProfile.group()
:ok = Synod.Raft.start_group(group, nodes, dir, machine: Synod.Raft.KV)
leader = Synod.Test.Raft.wait_leader(group, nodes)
nodes = [leader | nodes -- [leader]]
pids = Enum.map(nodes, &RaftProfile.member/1)
# warm up (code loading, the router's cache)
RaftProfile.pipelined(2_000, 1_000)
RaftProfile.sequential(200)

seq = max(div(commands, 10), 100)

for {label, n, fun} <- [
      {"pipelined (1,000 in flight)", commands, fn -> RaftProfile.pipelined(commands, 1_000) end},
      {"sequential", seq, fn -> RaftProfile.sequential(seq) end}
    ] do
  {[l | fs], client} = RaftProfile.per_command(nodes, pids, n, fun)

  IO.puts(
    "reductions per command, #{label}: leader's member #{round(l)}, followers' members " <>
      "#{Enum.map_join(fs, " / ", &round/1)}, client #{round(client)} " <>
      "(leader #{Float.round(l / max(client, 1), 2)}x the client)"
  )
end

rows = RaftProfile.eprof(leader, hd(pids), fn -> RaftProfile.pipelined(commands, 1_000) end)
RaftProfile.print_profile("leader's member, pipelined", rows, commands, top)

follower = Enum.at(nodes, 1)

rows =
  RaftProfile.eprof(follower, Enum.at(pids, 1), fn ->
    RaftProfile.pipelined(commands, 1_000)
  end)

RaftProfile.print_profile("a follower's member, pipelined", rows, commands, div(top, 2))

rows = RaftProfile.eprof(leader, hd(pids), fn -> RaftProfile.sequential(seq) end)
RaftProfile.print_profile("leader's member, sequential", rows, seq, top)

LocalCluster.stop(peers)
File.rm_rf(dir)
