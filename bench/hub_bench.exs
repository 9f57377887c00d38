# Hub benchmark: start/stop throughput, registry memory and redistribution
# time on 3 real :peer nodes, against a baseline measured in the same run.
#
#   MIX_ENV=test mix run bench/hub_bench.exs [N] [ROUNDS]
#
# N (default 100_000) trivial GenServer children; ROUNDS (default 3) rounds,
# medians printed. Baseline: the same children started round-robin through a
# DynamicSupervisor on each peer via :erpc (one call per peer, in parallel),
# with no registry. Synod: one awaited `Synod.start_children/3` call made on
# peer 1, placement by the ring; then the same from a fourth peer that runs
# no member (a client node, through a relay member). (MIX_ENV=test: the
# worker and peer helpers live in test/support.)

{_, 0} = System.cmd("epmd", ["-daemon"])

alias Synod.Test.HubBench, as: B

[n, rounds] = B.args()

median = &Synod.Test.Stats.median/1

rate = fn us -> round(n / (us / 1_000_000)) end

peers = Synod.LocalCluster.start(3, prefix: "bench")
nodes = Enum.map(peers, &elem(&1, 1))
[a | _] = nodes

IO.puts(
  "Synod hub benchmark: #{n} children, 3 peers, #{rounds} rounds, #{System.schedulers_online()} schedulers"
)

# ── baseline ──
for node <- nodes, do: :ok = :erpc.call(node, B, :baseline_sup, [])

baseline =
  for _ <- 1..rounds do
    ranges =
      for {node, k} <- Enum.with_index(nodes), do: {node, Enum.filter(1..n, &(rem(&1, 3) == k))}

    {start_us, _} =
      :timer.tc(fn ->
        ranges
        |> Enum.map(fn {node, range} ->
          Task.async(fn -> :erpc.call(node, B, :baseline_start, [range], :infinity) end)
        end)
        |> Enum.each(&(:ok = Task.await(&1, :infinity)))
      end)

    {stop_us, _} =
      :timer.tc(fn ->
        nodes
        |> Enum.map(fn node ->
          Task.async(fn -> :erpc.call(node, B, :baseline_stop, [], :infinity) end)
        end)
        |> Enum.each(&(:ok = Task.await(&1, :infinity)))
      end)

    {start_us, stop_us}
  end

# ── Synod ──
for node <- nodes, do: :ok = :erpc.call(node, B, :hub, [[name: :bench]])

Synod.Test.Wait.until(fn ->
  Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :members, [:bench])) == 3))
end)

{synod, memory} =
  for round <- 1..rounds, reduce: {[], nil} do
    {acc, memory} ->
      {start_us, :ok, ^n, 0} = :erpc.call(a, B, :synod_start, [:bench, n], :infinity)
      # every registry complete before measuring memory or stopping
      B.await_children(nodes, n)

      memory =
        if round == 1,
          do:
            for(
              node <- nodes,
              do:
                {:erpc.call(node, B, :registry_bytes, [:bench, n]),
                 :erpc.call(node, B, :coordinator_bytes, [:bench])}
            ),
          else: memory

      {stop_us, :ok, ^n, 0} = :erpc.call(a, B, :synod_stop, [:bench, n], :infinity)
      {[{start_us, stop_us} | acc], memory}
  end

# ── Synod from a client node (runs no member) ──
[{_, client}] = client_peers = Synod.LocalCluster.start(1, prefix: "benchc")
for node <- nodes, do: true = :erpc.call(client, Node, :connect, [node])

from_client =
  for _ <- 1..rounds do
    {start_us, :ok, ^n, 0} = :erpc.call(client, B, :synod_start, [:bench, n], :infinity)

    B.await_children(nodes, n)

    {stop_us, :ok, ^n, 0} = :erpc.call(client, B, :synod_stop, [:bench, n], :infinity)
    {start_us, stop_us}
  end

Synod.LocalCluster.stop(client_peers)

base_start = median.(Enum.map(baseline, &elem(&1, 0)))
base_stop = median.(Enum.map(baseline, &elem(&1, 1)))
syn_start = median.(Enum.map(synod, &elem(&1, 0)))
syn_stop = median.(Enum.map(synod, &elem(&1, 1)))
cl_start = median.(Enum.map(from_client, &elem(&1, 0)))
cl_stop = median.(Enum.map(from_client, &elem(&1, 1)))

IO.puts("""

start (median)   baseline #{rate.(base_start)}/s (#{div(base_start, 1000)} ms)   Synod #{rate.(syn_start)}/s (#{div(syn_start, 1000)} ms)   ratio #{Float.round(base_start / syn_start, 3)}
stop  (median)   baseline #{rate.(base_stop)}/s (#{div(base_stop, 1000)} ms)   Synod #{rate.(syn_stop)}/s (#{div(syn_stop, 1000)} ms)   ratio #{Float.round(base_stop / syn_stop, 3)}
from a client node (no member there): start #{rate.(cl_start)}/s (#{div(cl_start, 1000)} ms, ratio #{Float.round(base_start / cl_start, 3)})   stop #{rate.(cl_stop)}/s (#{div(cl_stop, 1000)} ms, ratio #{Float.round(base_stop / cl_stop, 3)})
all rounds (start_ms, stop_ms): baseline #{inspect(Enum.map(baseline, fn {s, t} -> {div(s, 1000), div(t, 1000)} end))} Synod #{inspect(Enum.map(Enum.reverse(synod), fn {s, t} -> {div(s, 1000), div(t, 1000)} end))} client #{inspect(Enum.map(from_client, fn {s, t} -> {div(s, 1000), div(t, 1000)} end))}
registry bytes per child per node: #{inspect(Enum.map(memory, fn {b, _} -> Float.round(b, 1) end))} (process memory per child on its node, coordinator / children's supervisor: #{inspect(Enum.map(memory, fn {_, {c, s}} -> {div(c * 3, n), div(s * 3, n)} end))})
""")

# ── redistribution: kill the node holding a third of the children ──
redistribute = fn nodes, total ->
  [a | _] = nodes
  {_, :ok, ^total, 0} = :erpc.call(a, B, :synod_start, [:bench, total], :infinity)

  B.await_children(nodes, total)

  [_, _, victim] = nodes
  survivors = nodes -- [victim]
  on_victim = length(:erpc.call(victim, Synod, :children, [:bench, :local]))
  owned = :erpc.call(a, B, :owned_counts, [survivors, total])

  for s <- survivors,
      do: :ok = :erpc.call(s, B, :watch_until, [:bench, Map.fetch!(owned, s), self()])

  true = Node.monitor(victim, true)
  t0 = :os.system_time(:microsecond)
  :erpc.cast(victim, :erlang, :halt, [])

  done =
    for _ <- survivors,
        do:
          receive(
            do: ({:redistributed, _, t} -> t),
            after: (60_000 -> raise "redistribution timed out")
          )

  receive do: ({:nodedown, ^victim} -> :ok), after: (10_000 -> :ok)
  {on_victim, div(Enum.max(done) - t0, 1000)}
end

{moved, ms} = redistribute.(nodes, 30_000)

IO.puts(
  "redistribution: #{moved} children of a killed node (30k in total) running again on their new owners after #{ms} ms"
)

Synod.LocalCluster.stop(peers)

# a second cluster for the larger case (the victim above is gone)
peers = Synod.LocalCluster.start(3, prefix: "bench2")
nodes = Enum.map(peers, &elem(&1, 1))
for node <- nodes, do: :ok = :erpc.call(node, B, :hub, [[name: :bench]])

Synod.Test.Wait.until(fn ->
  Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :members, [:bench])) == 3))
end)

{moved, ms} = redistribute.(nodes, 90_000)

IO.puts(
  "redistribution: #{moved} children of a killed node (90k in total) running again on their new owners after #{ms} ms"
)

Synod.LocalCluster.stop(peers)
