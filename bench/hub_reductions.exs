# Hub cost counter (not a speed bench: no wall clock, so no baseline ratio):
# the reductions of every hub process (coordinator and children's supervisor)
# per child for a 100k start and stop from one member, and of the survivors'
# for the redistribution of a killed node's ~10k children (30k in total).
# Reductions do not depend on the machine's load, so two builds can be
# compared on a busy machine (docs/hub.md, "Issue 17: the pure core").
#
#   MIX_ENV=test mix run bench/hub_reductions.exs

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.Test.HubBench, as: B
n = 100_000
peers = Synod.LocalCluster.start(3, prefix: "red")
nodes = Enum.map(peers, &elem(&1, 1))
[a | _] = nodes
for node <- nodes, do: :ok = :erpc.call(node, B, :hub, [[name: :bench]])

Synod.Test.Wait.until(fn ->
  Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :members, [:bench])) == 3))
end)

reds = fn ->
  for node <- nodes, reduce: 0 do
    acc ->
      acc +
        Enum.sum(
          for name <- [:bench, :"bench.children"] do
            pid = :erpc.call(node, Process, :whereis, [name])
            elem(:erpc.call(node, Process, :info, [pid, :reductions]), 1)
          end
        )
  end
end

await = &B.await_children(nodes, &1)

# `mix run bench/hub_reductions.exs redistribution` skips the start and stop
only_redistribution = System.argv() == ["redistribution"]

rows =
  for _ <- if(only_redistribution, do: [], else: 1..3) do
    r0 = reds.()
    {_, :ok, ^n, 0} = :erpc.call(a, B, :synod_start, [:bench, n], :infinity)
    await.(n)
    r1 = reds.()
    {_, :ok, ^n, 0} = :erpc.call(a, B, :synod_stop, [:bench, n], :infinity)
    await.(0)
    r2 = reds.()
    {div(r1 - r0, n), div(r2 - r1, n)}
  end

IO.puts("hub reductions per child (start, stop), 3 rounds: #{inspect(rows)}")
Synod.LocalCluster.stop(peers)

total = 30_000

for run <- 1..3 do
  peers = Synod.LocalCluster.start(3, prefix: "red2#{run}")
  nodes = Enum.map(peers, &elem(&1, 1))
  [a, b, victim] = nodes
  for node <- nodes, do: :ok = :erpc.call(node, B, :hub, [[name: :bench]])

  Synod.Test.Wait.until(fn ->
    Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :members, [:bench])) == 3))
  end)

  {_, :ok, ^total, 0} = :erpc.call(a, B, :synod_start, [:bench, total], :infinity)

  Synod.Test.Wait.until(
    fn ->
      Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :children, [:bench, :global])) == total))
    end,
    60_000
  )

  reds = fn ->
    Enum.sum(
      for node <- [a, b], name <- [:bench, :"bench.children"] do
        pid = :erpc.call(node, Process, :whereis, [name])
        elem(:erpc.call(node, Process, :info, [pid, :reductions]), 1)
      end
    )
  end

  moved = length(:erpc.call(victim, Synod, :children, [:bench, :local]))
  for node <- [a, b], do: :ok = :erpc.call(node, Synod.Test.HubTelemetry, :forward, [self()])
  r0 = reds.()
  :erpc.cast(victim, :erlang, :halt, [])

  Synod.Test.Wait.until(
    fn ->
      Enum.sum(for n <- [a, b], do: length(:erpc.call(n, Synod, :children, [:bench, :local]))) ==
        total
    end,
    60_000
  )

  Process.sleep(500)
  r1 = reds.()

  # each survivor's reconcile after the loss, timed by the hub itself
  # (`[:synod, :hub, :redistribution, :stop]`, its duration in native units)
  reconcile_ms =
    for node <- [a, b] do
      receive do
        {:telemetry, ^node, [:synod, :hub, :redistribution, :stop], %{duration: d}, _} ->
          System.convert_time_unit(d, :native, :microsecond) / 1000
      after
        5_000 -> nil
      end
    end

  IO.puts(
    "run #{run}: #{moved} moved, survivors' hub reductions #{r1 - r0} (#{div(r1 - r0, moved)} per moved child), survivors' reconcile #{inspect(reconcile_ms)} ms"
  )

  Synod.LocalCluster.stop(peers)
end
