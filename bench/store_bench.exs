# Store benchmark on real :peer nodes: 3 voters (fsync on) and 1 node that
# runs no member of the store (the usual deployment: a few voters, many
# application nodes).
#
#   MIX_ENV=test mix run bench/store_bench.exs [ROUNDS] [OPS]
#
# Every round (default 3) measures, alternating A/B in the same store:
# 1. Clients on a node with no member against the baseline, a client on a
#    follower's node (a member's node: the request takes the same one hop to
#    the leader): sequential put p50/p99 (OPS puts, default 500) and puts/s
#    with 16 concurrent clients. Target: the non-member within 1.25x.
# 2. Queue and tasks against a plain put (on a follower's node):
#    enqueue+dequeue p50 and reserve+terminate p50 over the put p50 of the
#    same round. Targets: <= 2.2x and <= 2.5x.
# Medians of the rounds are printed, with their ratios.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster
alias Synod.Test.{CoordBench, Stats}
alias Synod.Test.Queue, as: Q
alias Synod.Test.Store, as: S

[rounds, ops] =
  case System.argv() do
    [r, o] -> [String.to_integer(r), String.to_integer(o)]
    [r] -> [String.to_integer(r), 500]
    [] -> [3, 500]
  end

dir = Path.join(System.tmp_dir!(), "synod-store-bench-#{System.unique_integer([:positive])}")
voters = LocalCluster.start(3, prefix: "sbv")
[{_, outsider}] = outsiders = LocalCluster.start(1, prefix: "sbc")
nodes = Enum.map(voters, &elem(&1, 1))
store = :store_bench

try do
  :ok = Synod.Store.start(store, nodes, dir)
  leader = Synod.Test.Raft.wait_leader(store, nodes)
  [member | _] = nodes -- [leader]
  call = fn node, mod, fun, args -> :erpc.call(node, mod, fun, args, 600_000) end
  # Warm up both clients' routes.
  for n <- [member, outsider], do: call.(n, CoordBench, :puts, [store, 50])

  IO.puts(
    "Synod store benchmark: 3 voters + 1 node with no member, #{System.schedulers_online()} schedulers, " <>
      "#{rounds} rounds x #{ops} ops, medians of the rounds"
  )

  results =
    for r <- 1..rounds do
      put_m = call.(member, CoordBench, :puts, [store, ops])
      put_o = call.(outsider, CoordBench, :puts, [store, ops])
      rate_m = call.(member, S, :put_rate, [store, 16, div(ops, 4)])
      rate_o = call.(outsider, S, :put_rate, [store, 16, div(ops, 4)])
      queue = call.(member, Q, :pairs, [{store, "q#{r}"}, div(ops, 2)])
      tasks = call.(member, Q, :cycles, [store, "t#{r}", div(ops, 2)])

      %{
        put_m50: Stats.pct(put_m, 50),
        put_m99: Stats.pct(put_m, 99),
        put_o50: Stats.pct(put_o, 50),
        put_o99: Stats.pct(put_o, 99),
        rate_m: rate_m,
        rate_o: rate_o,
        queue50: Stats.pct(queue, 50),
        tasks50: Stats.pct(tasks, 50)
      }
    end

  med = fn key -> Stats.median(Enum.map(results, & &1[key])) end
  ratio = fn a, b -> Float.round(a / max(b, 1), 2) end

  IO.puts(
    "sequential put, member's node:   p50 #{Stats.ms(med.(:put_m50))} ms  p99 #{Stats.ms(med.(:put_m99))} ms"
  )

  IO.puts(
    "sequential put, non-member node: p50 #{Stats.ms(med.(:put_o50))} ms  p99 #{Stats.ms(med.(:put_o99))} ms  (#{ratio.(med.(:put_o50), med.(:put_m50))}x the member's p50; target <= 1.25x)"
  )

  IO.puts("16 clients, member's node:   #{med.(:rate_m)} puts/s")

  IO.puts(
    "16 clients, non-member node: #{med.(:rate_o)} puts/s  (member's rate / non-member's: #{ratio.(med.(:rate_m), med.(:rate_o))}x; target <= 1.25x)"
  )

  IO.puts(
    "queue enqueue+dequeue: p50 #{Stats.ms(med.(:queue50))} ms  (#{ratio.(med.(:queue50), med.(:put_m50))}x a put's p50; target <= 2.2x)"
  )

  IO.puts(
    "tasks reserve+terminate: p50 #{Stats.ms(med.(:tasks50))} ms  (#{ratio.(med.(:tasks50), med.(:put_m50))}x a put's p50; target <= 2.5x)"
  )
after
  LocalCluster.stop(voters ++ outsiders)
  File.rm_rf(dir)
end
