# Coordination primitives benchmark on 3 real :peer nodes (a store of 3
# voters, fsync on).
#
#   MIX_ENV=test mix run bench/coord_bench.exs [ROUNDS] [OPS]
#
# Each measurement runs ROUNDS times (default 3) and prints the median of
# the rounds. Sequential operations (OPS per round, default 300) run from
# one client on a follower's node (requests go to the leader, as most
# clients' would):
#   put                 Synod.Store.put/4
#   compare-and-swap    Synod.Store.txn/5 comparing mod_revision, then put
#   lock + unlock       Synod.Lock.lock/4 with an empty fun
#   election claim      Synod.Election: start -> :elected (then close)
# Contention: 8 clients (spread over the 3 nodes) take one lock in a loop
# for 3 s; total cycles/s and the max/min cycles per client (fairness).
# Baseline in the same run: :global.trans/3 lock + unlock over the same
# 3 nodes (no disk, no quorum, no fencing), sequential and with 8 clients;
# the election claim's rate is also given against put's (same run).

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster
alias Synod.Test.CoordBench

[rounds, ops] =
  case System.argv() do
    [r, o] -> [String.to_integer(r), String.to_integer(o)]
    [r] -> [String.to_integer(r), 300]
    [] -> [3, 300]
  end

defmodule CoordBenchRun do
  defdelegate pct(list, p), to: Synod.Test.Stats
  defdelegate median(list), to: Synod.Test.Stats
  defdelegate ms(us), to: Synod.Test.Stats

  # One round: {ops/s, p50 us, p99 us} of a list of per-op microseconds.
  def stats(times),
    do: {length(times) / (Enum.sum(times) / 1_000_000), pct(times, 50), pct(times, 99)}

  def sequential(rounds, fun) do
    results = for _ <- 1..rounds, do: stats(fun.())

    {median(Enum.map(results, &elem(&1, 0))), median(Enum.map(results, &elem(&1, 1))),
     median(Enum.map(results, &elem(&1, 2)))}
  end

  def contention(rounds, kind, store, key, nodes, ms) do
    results =
      for r <- 1..rounds do
        clients =
          for i <- 0..7 do
            node = Enum.at(nodes, rem(i, length(nodes)))
            args = [kind, store, "#{key}-#{r}", nodes, ms, self()]
            Node.spawn(node, CoordBench, :contend, args)
          end

        for c <- clients, do: send(c, :go)
        counts = for c <- clients, do: receive(do: ({:count, ^c, n} -> n))
        {Enum.sum(counts) / (ms / 1000), Enum.max(counts) / max(Enum.min(counts), 1), counts}
      end

    {median(Enum.map(results, &elem(&1, 0))), median(Enum.map(results, &elem(&1, 1))),
     Enum.map(results, &elem(&1, 2))}
  end

  def row(name, {rate, p50, p99}),
    do:
      IO.puts(
        "  #{String.pad_trailing(name, 30)} #{String.pad_leading(Integer.to_string(round(rate)), 8)}/s   p50 #{ms(p50)} ms   p99 #{ms(p99)} ms"
      )
end

dir = Path.join(System.tmp_dir!(), "synod-coord-bench-#{System.unique_integer([:positive])}")
peers = LocalCluster.start(3, prefix: "cb")
nodes = Enum.map(peers, &elem(&1, 1))
store = :coord_bench

try do
  leader = Synod.Test.Coord.start_store(store, nodes, dir)
  [client | _] = nodes -- [leader]
  on = fn fun, args -> :erpc.call(client, CoordBench, fun, args, 600_000) end
  # Warm up the routes and the lock keeper.
  on.(:puts, [store, 20])
  on.(:locks, [store, "bench/warm", 20])

  IO.puts(
    "3 voters on 127.0.0.1, client on a follower; #{rounds} rounds x #{ops} ops, medians of the rounds"
  )

  put = CoordBenchRun.sequential(rounds, fn -> on.(:puts, [store, ops]) end)
  cas = CoordBenchRun.sequential(rounds, fn -> on.(:cas, [store, ops]) end)
  lock = CoordBenchRun.sequential(rounds, fn -> on.(:locks, [store, "bench/lock", ops]) end)
  claim = CoordBenchRun.sequential(rounds, fn -> on.(:claims, [store, div(ops, 3)]) end)

  global =
    CoordBenchRun.sequential(rounds, fn -> on.(:global_locks, [:bench_global, nodes, ops]) end)

  CoordBenchRun.row("put", put)
  CoordBenchRun.row("compare-and-swap", cas)
  CoordBenchRun.row("lock + unlock (Synod.Lock)", lock)
  CoordBenchRun.row("election claim (start->elected)", claim)
  CoordBenchRun.row("baseline :global.trans", global)

  IO.puts(
    "  lock + unlock vs :global.trans: #{Float.round(elem(lock, 0) / elem(global, 0), 3)}x the rate"
  )

  # The election claim has no outside baseline; against put (one logged
  # write, same run, same store) its ratio is as comparable between runs.
  IO.puts("  election claim vs put: #{Float.round(elem(claim, 0) / elem(put, 0), 3)}x the rate")

  IO.puts("\n8 clients on one lock (spread over the 3 nodes), 3 s per round")

  {s_rate, s_fair, s_counts} =
    CoordBenchRun.contention(rounds, :synod, store, "bench/contended", nodes, 3_000)

  {g_rate, g_fair, g_counts} =
    CoordBenchRun.contention(rounds, :global, store, :bench_contended, nodes, 3_000)

  IO.puts(
    "  Synod.Lock       #{round(s_rate)} cycles/s, max/min per client #{Float.round(s_fair * 1.0, 2)}  counts #{inspect(s_counts, charlists: :as_lists)}"
  )

  IO.puts(
    "  :global.trans    #{round(g_rate)} cycles/s, max/min per client #{Float.round(g_fair * 1.0, 2)}  counts #{inspect(g_counts, charlists: :as_lists)}"
  )

  IO.puts("  (max/min uses min 1 for a starved client)")

  IO.puts(
    "  Synod.Lock vs :global.trans, 8 clients: #{Float.round(s_rate / g_rate, 3)}x the rate"
  )
after
  LocalCluster.stop(peers)
  File.rm_rf(dir)
end
