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

# 3. The hops of a sequential command, from message traces
#    (`:erlang.trace/3` with `[:send, :receive, :monotonic_timestamp]` on
#    the three members and on the client; a tracer process on each VM, so
#    every interval is measured on one VM's clock, never across VMs):
#    client's round trip; on the leader, command received -> its appends
#    sent -> the first answer received -> the reply sent; on a follower,
#    an append received -> its answer sent (write + fdatasync). The hops
#    are what is left: client<->leader = round trip - leader's part,
#    leader<->follower = the leader's wait for the first answer - the
#    follower's part. Medians of COMMANDS / 20 commands.

{_, 0} = System.cmd("epmd", ["-daemon"])

{:module, tracer_mod, tracer_bin, _} =
  defmodule RaftHops.Tracer do
    @moduledoc false
    # Runs on every VM: traces `pids`' sends and receives, keeps the
    # events as {time_us, :send | :receive, kind}, hands them over on
    # {:stop, from}.
    def start(pids) do
      parent = self()

      pid =
        spawn(fn ->
          for p <- pids, do: :erlang.trace(p, true, [:send, :receive, :monotonic_timestamp])
          send(parent, :tracing)
          loop([])
        end)

      receive do
        :tracing -> pid
      end
    end

    defp loop(acc) do
      receive do
        {:trace_ts, pid, dir, msg, ts} when dir == :receive ->
          loop([{us(ts), pid, :receive, kind(msg)} | acc])

        {:trace_ts, pid, :send, msg, _to, ts} ->
          loop([{us(ts), pid, :send, kind(msg)} | acc])

        {:stop, from} ->
          :erlang.trace(:all, false, [:all])
          send(from, {:hops, Enum.reverse(acc)})

        _ ->
          loop(acc)
      end
    end

    defp us(ts), do: System.convert_time_unit(ts, :native, :microsecond)
    defp kind({:"$gen_call", _, {:command, _, _}}), do: :command
    defp kind({:synod_raft, _, _, _, _}), do: :raft
    defp kind({_tag, {:ok, _}}), do: :reply
    defp kind(_), do: :other
  end

alias Synod.LocalCluster

[commands, top] =
  case System.argv() do
    [c, t] -> [String.to_integer(c), String.to_integer(t)]
    [c] -> [String.to_integer(c), 25]
    [] -> [20_000, 25]
  end

defmodule RaftHops do
  # On the leader: per command, received -> first append sent -> first
  # answer received -> reply sent.
  def leader(events), do: leader(events, [])

  defp leader([{t0, _, :receive, :command} | rest], acc) do
    with {ta, rest} <- first(rest, :send, :raft),
         {tb, rest} <- first(rest, :receive, :raft),
         {tr, rest} <- first(rest, :send, :reply) do
      leader(rest, [{ta - t0, tb - ta, tr - tb, tr - t0} | acc])
    else
      _ -> Enum.reverse(acc)
    end
  end

  defp leader([_ | rest], acc), do: leader(rest, acc)
  defp leader([], acc), do: Enum.reverse(acc)

  # On a follower: an append received -> the next message it sends.
  def follower([{t0, _, :receive, :raft} | rest], acc) do
    case first(rest, :send, :raft) do
      {t1, rest} -> follower(rest, [t1 - t0 | acc])
      nil -> acc
    end
  end

  def follower([_ | rest], acc), do: follower(rest, acc)
  def follower([], acc), do: acc

  defp first([{t, _, dir, kind} | rest], dir, kind), do: {t, rest}
  defp first([_ | rest], dir, kind), do: first(rest, dir, kind)
  defp first([], _, _), do: nil
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
  # Also the CPU time of each VM (`:erlang.statistics(:runtime)`: every
  # thread of the VM, ms), members' VMs first, then this one (the client's).
  def per_command(nodes, pids, n, fun) do
    before = Enum.map(Enum.zip(nodes, pids), fn {node, pid} -> reductions(node, pid) end)
    cpu0 = cpu(nodes)
    {:reductions, c0} = Process.info(self(), :reductions)
    t0 = System.monotonic_time(:microsecond)
    fun.()
    us = System.monotonic_time(:microsecond) - t0
    {:reductions, c1} = Process.info(self(), :reductions)
    cpu1 = cpu(nodes)
    after_ = Enum.map(Enum.zip(nodes, pids), fn {node, pid} -> reductions(node, pid) end)
    members = Enum.zip_with(after_, before, fn a, b -> (a - b) / n end)

    {members, (c1 - c0) / n, Enum.zip_with(cpu1, cpu0, fn a, b -> 1000 * (a - b) / n end),
     round(n / (us / 1_000_000))}
  end

  defp cpu(nodes) do
    for(n <- nodes, do: elem(:erpc.call(n, :erlang, :statistics, [:runtime]), 0)) ++
      [elem(:erlang.statistics(:runtime), 0)]
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

load = fn -> :os.cmd(~c"cut -d' ' -f1 /proc/loadavg") |> to_string() |> String.trim() end
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
  {[l | fs], client, [cl | cpus], rate} = RaftProfile.per_command(nodes, pids, n, fun)
  {cfs, [cc]} = Enum.split(cpus, 2)

  IO.puts(
    "reductions per command, #{label}: leader's member #{round(l)}, followers' members " <>
      "#{Enum.map_join(fs, " / ", &round/1)}, client #{round(client)} " <>
      "(leader #{Float.round(l / max(client, 1), 2)}x the client)"
  )

  IO.puts(
    "CPU us per command (whole VM), #{label}: leader's #{round(cl)}, followers' " <>
      "#{Enum.map_join(cfs, " / ", &round/1)}, client's #{round(cc)}, all #{round(cl + cc + Enum.sum(cfs))} " <>
      "(wall clock, noisy: #{rate} commands/s, load #{load.()})"
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

# ── hops of a sequential command ──
for n <- nodes,
    do:
      {:module, _} =
        :erpc.call(n, :code, :load_binary, [tracer_mod, ~c"raft_profile.exs", tracer_bin])

hop_n = max(div(commands, 20), 50)

tracers =
  for {n, pid} <- Enum.zip(nodes, pids), do: :erpc.call(n, RaftHops.Tracer, :start, [[pid]])

round_trips =
  for i <- 1..hop_n do
    t0 = System.monotonic_time(:microsecond)
    {:ok, _} = Synod.Raft.command(group, {:put, {:h, i}, i})
    System.monotonic_time(:microsecond) - t0
  end

[leader_ev | follower_evs] =
  for t <- tracers do
    send(t, {:stop, self()})

    receive do
      {:hops, events} -> events
    end
  end

med = fn list -> Synod.Test.Stats.pct(list, 50) end
rows = RaftHops.leader(leader_ev)
to_append = med.(Enum.map(rows, &elem(&1, 0)))
wait = med.(Enum.map(rows, &elem(&1, 1)))
to_reply = med.(Enum.map(rows, &elem(&1, 2)))
inside = med.(Enum.map(rows, &elem(&1, 3)))
f = med.(Enum.flat_map(follower_evs, &RaftHops.follower(&1, [])))
rt = med.(round_trips)

IO.puts(
  "hops of a sequential command (#{length(rows)} traced, medians, us): client round trip #{rt}; " <>
    "leader: command -> appends sent #{to_append}, -> first answer #{wait}, -> reply sent #{to_reply} " <>
    "(#{inside} inside); follower: append -> answer #{f} (its write + fdatasync); " <>
    "client<->leader hops #{rt - inside}, leader<->follower hops #{wait - f} (load #{load.()})"
)

LocalCluster.stop(peers)
File.rm_rf(dir)
