# The cost of events and metrics: the hub's start rate and the Raft command
# rate with Synod.Metrics running on every node (its handler attached to
# every event, one ETS update per event in the emitting process) against
# without it (no handler: an event costs one ETS lookup), in the same run,
# alternating rounds on the same 3 :peer nodes. Medians; target: at most 5%.
#
#   MIX_ENV=test mix run bench/observability_bench.exs [ROUNDS] [CHILDREN] [COMMANDS]
#
# ROUNDS (default 5) pairs of rounds, off then on (the order flips every
# round so drift cancels). CHILDREN (default 20_000) trivial children started
# with one awaited Synod.start_children/3 on peer 1 and stopped again;
# COMMANDS (default 4_000) Raft commands from 16 clients on the leader's
# node, fsync on.

{_, 0} = System.cmd("epmd", ["-daemon"])

alias Synod.Test.{HubBench, ObsBench, Stats}

[rounds, children, commands] =
  case Enum.map(System.argv(), &String.to_integer/1) do
    [r, c, n] -> [r, c, n]
    [r, c] -> [r, c, 4_000]
    [r] -> [r, 20_000, 4_000]
    [] -> [5, 20_000, 4_000]
  end

peers = Synod.LocalCluster.start(3, prefix: "obsb")
nodes = [a | _] = Enum.map(peers, &elem(&1, 1))
dir = Path.join(System.tmp_dir!(), "synod-obs-bench-#{System.unique_integer([:positive])}")

for n <- nodes, do: :ok = :erpc.call(n, HubBench, :hub, [[name: :obs_bench]])

Synod.Test.Wait.until(fn ->
  Enum.all?(nodes, &(:erpc.call(&1, Synod, :members, [:obs_bench]) == Enum.sort(nodes)))
end)

:ok = Synod.Raft.start_group(:obs_bench_raft, nodes, dir, machine: Synod.Raft.KV)
leader = Synod.Test.Raft.wait_leader(:obs_bench_raft, nodes)
clients = 16
per = div(commands, clients)

set = fn mode -> for n <- nodes, do: :ok = :erpc.call(n, ObsBench, mode, []) end

# The reductions of the hub's processes (coordinator, children's
# supervisor) on the three nodes: a cost counter the machine's load does
# not move, so on against off shows what the metrics cost the hub itself.
reds = fn ->
  for n <- nodes, name <- [:obs_bench, :"obs_bench.children"], reduce: 0 do
    acc ->
      pid = :erpc.call(n, Process, :whereis, [name])
      acc + elem(:erpc.call(n, Process, :info, [pid, :reductions]), 1)
  end
end

# The same for the Raft members (the processes that emit commit and fsync).
raft_reds = fn ->
  for n <- nodes, reduce: 0 do
    acc ->
      pid = :erpc.call(n, Process, :whereis, [Synod.Raft.member_name(:obs_bench_raft)])
      acc + elem(:erpc.call(n, Process, :info, [pid, :reductions]), 1)
  end
end

round = fn mode ->
  set.(if mode == :on, do: :metrics_on, else: :metrics_off)
  r0 = reds.()
  {us, :ok, ^children, 0} = :erpc.call(a, HubBench, :synod_start, [:obs_bench, children], 600_000)
  {_, :ok, ^children, 0} = :erpc.call(a, HubBench, :synod_stop, [:obs_bench, children], 600_000)
  r1 = reds.()

  q0 = raft_reds.()

  raft =
    :erpc.call(leader, Synod.Test.Raft, :throughput, [:obs_bench_raft, clients, per], 600_000)

  q1 = raft_reds.()

  {mode, round(children / (us / 1_000_000)), raft, (r1 - r0) / children,
   (q1 - q0) / (per * clients)}
end

# One warm-up round of each, not counted.
round.(:off)
round.(:on)

results =
  Enum.flat_map(1..rounds, fn i ->
    order = if rem(i, 2) == 1, do: [:off, :on], else: [:on, :off]
    Enum.map(order, round)
  end)

for {mode, hub, raft, r, q} <- results,
    do:
      IO.puts(
        "  #{mode}: hub #{hub} starts/s, raft #{raft} commands/s, #{Float.round(r, 1)} hub reductions per child, #{Float.round(q, 1)} member reductions per command"
      )

med = fn mode, pos ->
  results |> Enum.filter(&(elem(&1, 0) == mode)) |> Enum.map(&elem(&1, pos)) |> Stats.median()
end

[hub_off, hub_on, raft_off, raft_on] = [med.(:off, 1), med.(:on, 1), med.(:off, 2), med.(:on, 2)]

# The ratio within each pair of adjacent rounds (off-on or on-off), whose
# median drifts less with the machine's load than the ratio of medians.
pair = fn pos ->
  results
  |> Enum.chunk_every(2)
  |> Enum.map(fn chunk ->
    m = Map.new(chunk, fn r -> {elem(r, 0), elem(r, pos)} end)
    m.on / m.off
  end)
  |> Stats.median()
end

# What the metrics handler has to do in one start: the events the three
# nodes emit while 20,000 (CHILDREN) children start and stop, counted by a
# second handler during one more round with the metrics on.
for n <- nodes, do: :ok = :erpc.call(n, ObsBench, :count_events, [])
round.(:on)

counted =
  nodes
  |> Enum.map(&:erpc.call(&1, ObsBench, :counted, []))
  |> Enum.reduce(%{}, &Map.merge(&1, &2, fn _, x, y -> x + y end))

hub_events =
  counted
  |> Enum.filter(fn {[_, f | _], _} -> f == :hub end)
  |> Enum.map(&elem(&1, 1))
  |> Enum.sum()

IO.puts("""

observability cost, #{rounds} rounds each, medians (3 peers, fsync on)
  hub start of #{children} children: off #{hub_off}/s, on #{hub_on}/s, on/off #{Float.round(hub_on / hub_off, 3)} (median of pairs #{Float.round(pair.(1), 3)})
  raft, #{clients} clients:          off #{raft_off}/s, on #{raft_on}/s, on/off #{Float.round(raft_on / raft_off, 3)} (median of pairs #{Float.round(pair.(2), 3)})
  hub reductions per child started and stopped: off #{Float.round(med.(:off, 3), 1)}, on #{Float.round(med.(:on, 3), 1)}, on/off #{Float.round(med.(:on, 3) / med.(:off, 3), 3)}
  Raft members' reductions per command: off #{Float.round(med.(:off, 4), 1)}, on #{Float.round(med.(:on, 4), 1)}, on/off #{Float.round(med.(:on, 4) / med.(:off, 4), 3)}
  target: on/off >= 0.95
  events in one round on the 3 nodes: #{hub_events} hub events for #{children} starts and stops; all: #{inspect(counted)}
""")

# The emitter's cost of one event, on this node: with the metrics handler
# attached against none, alternating rounds of 200,000 events. Per Raft
# command the member emits at most two events per batch (commit, fsync) and
# the caller one (a store request), so this bounds the per-command cost.
Synod.LocalCluster.ensure_distributed()
event = [:synod, :raft, :fsync]

emit = fn ->
  t0 = System.monotonic_time(:nanosecond)

  for _ <- 1..200_000,
      do:
        Synod.Telemetry.execute(event, %{duration: 1_000, bytes: 100}, %{group: :g, node: node()})

  (System.monotonic_time(:nanosecond) - t0) / 200_000
end

micro =
  for i <- 1..(2 * rounds) do
    mode = if rem(i, 2) == 0, do: :on, else: :off
    if mode == :on, do: ObsBench.metrics_on(), else: ObsBench.metrics_off()
    {mode, emit.()}
  end

ObsBench.metrics_off()

ns = fn mode ->
  micro |> Enum.filter(&(elem(&1, 0) == mode)) |> Enum.map(&elem(&1, 1)) |> Stats.median()
end

{off_ns, on_ns} = {ns.(:off), ns.(:on)}
per_cmd_ns = 1.0e9 / raft_on

per_start_ns = 1.0e9 / hub_on

IO.puts("""
  one event in the emitter:        off #{Float.round(off_ns, 1)} ns, on #{Float.round(on_ns, 1)} ns (handler + ETS update)
  3 events per command at the measured rate: #{Float.round(100 * 3 * (on_ns - off_ns) / per_cmd_ns, 3)}% of a command's time
  hub events per start at the measured rate: #{Float.round(100 * hub_events / children * (on_ns - off_ns) / per_start_ns, 4)}% of a start's time
""")

Synod.LocalCluster.stop(peers)
File.rm_rf(dir)
