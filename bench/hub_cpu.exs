# Hub CPU counter: the CPU time of the 3 peer VMs (`:erlang.statistics(:runtime)`,
# every thread of each) spent by a start and a stop of N children through
# the hub, against the same children started and stopped through the
# baseline of bench/hub_bench.exs (a DynamicSupervisor per peer, one :erpc
# call per peer), in the same run. CPU time grows much less with the
# machine's load than wall-clock time does, so on a busy machine this tells
# two builds apart where hub_bench.exs's wall-clock ratios cannot (its
# figures remain the targets). Run with the schedulers' busy wait off, or
# the spinning of idle schedulers counts as work:
#
#   ERL_AFLAGS="+sbwt none +sbwtdcpu none +sbwtdio none" \
#     MIX_ENV=test mix run bench/hub_cpu.exs [N] [ROUNDS]
#
# (The peers inherit ERL_AFLAGS.) Synod's stop is counted until its answer,
# the child ids built by the caller included (a few per cent of it), and
# per node, the caller's node first.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.Test.HubBench, as: B

[n, rounds] = B.args()

median = &Synod.Test.Stats.median/1

peers = Synod.LocalCluster.start(3, prefix: "cpu")
nodes = Enum.map(peers, &elem(&1, 1))
[a | _] = nodes

per_node = fn ->
  for node <- nodes, do: elem(:erpc.call(node, :erlang, :statistics, [:runtime]), 0)
end

spent = fn before -> for {b, x} <- Enum.zip(before, per_node.()), do: x - b end

await = &B.await_children(nodes, &1)

for node <- nodes, do: :ok = :erpc.call(node, B, :baseline_sup, [])

baseline =
  for _ <- 1..rounds do
    ranges =
      for {node, k} <- Enum.with_index(nodes), do: {node, Enum.filter(1..n, &(rem(&1, 3) == k))}

    c0 = per_node.()

    ranges
    |> Enum.map(fn {node, range} ->
      Task.async(fn -> :erpc.call(node, B, :baseline_start, [range], :infinity) end)
    end)
    |> Enum.each(&(:ok = Task.await(&1, :infinity)))

    start = Enum.sum(spent.(c0))
    c1 = per_node.()

    nodes
    |> Enum.map(fn node ->
      Task.async(fn -> :erpc.call(node, B, :baseline_stop, [], :infinity) end)
    end)
    |> Enum.each(&(:ok = Task.await(&1, :infinity)))

    {start, Enum.sum(spent.(c1))}
  end

for node <- nodes, do: :ok = :erpc.call(node, B, :hub, [[name: :bench]])

Synod.Test.Wait.until(fn ->
  Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :members, [:bench])) == 3))
end)

synod =
  for _ <- 1..rounds do
    c0 = per_node.()
    {_, :ok, ^n, 0} = :erpc.call(a, B, :synod_start, [:bench, n], :infinity)
    start_split = spent.(c0)
    start = Enum.sum(start_split)
    await.(n)
    Process.sleep(200)
    c1 = per_node.()
    {_, :ok, ^n, 0} = :erpc.call(a, B, :synod_stop, [:bench, n], :infinity)
    stop = spent.(c1)
    await.(0)
    {start, Enum.sum(stop), stop, start_split}
  end

Synod.LocalCluster.stop(peers)

[bs, bt, ss, st] =
  for {list, k} <- [{baseline, 0}, {baseline, 1}, {synod, 0}, {synod, 1}],
      do: median.(Enum.map(list, &elem(&1, k)))

IO.puts("""
CPU ms of the 3 peers, #{n} children, #{rounds} rounds (medians)
start   baseline #{bs}   Synod #{ss}   ratio #{Float.round(bs / ss, 3)}
stop    baseline #{bt}   Synod #{st}   ratio #{Float.round(bt / st, 3)}
all rounds (start, stop): baseline #{inspect(baseline)} Synod #{inspect(Enum.map(synod, fn {s, t, _, _} -> {s, t} end))}
Synod's start per node (the caller's first): #{inspect(Enum.map(synod, &elem(&1, 3)))}
Synod's stop per node (the caller's first): #{inspect(Enum.map(synod, &elem(&1, 2)))}
""")
