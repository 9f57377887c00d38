# Queue and task-store benchmark on 3 real :peer nodes (a 3-voter store,
# fsync on). Every figure runs from a follower's node (one hop to the
# leader, as most clients are), and is set against a baseline measured in
# the same run on the same store:
#
#   MIX_ENV=test mix run bench/queue_bench.exs [N] [ROUNDS]
#
# 1. Enqueue + dequeue pairs (plain mode): latency of one pair, p50/p99,
#    sequential; and pairs per second with 4 clients on one queue.
# 2. Reserve + terminate cycles: the same, on one topic.
# Baseline for both: raw Synod.Store put + delete pairs (two logged writes
# per pair, no reads, no contention) — the floor that any recipe of two
# writes on this store pays. The ratio says what the recipes cost on top
# (reads, compares, lease grants and revokes, contention).
# Each measurement runs ROUNDS times (default 3); medians are printed.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.Test.Queue, as: Q

[n, rounds] =
  case System.argv() do
    [n, r] -> [String.to_integer(n), String.to_integer(r)]
    [n] -> [String.to_integer(n), 3]
    [] -> [300, 3]
  end

defmodule QueueBench do
  defdelegate pct(list, p), to: Synod.Test.Stats
  defdelegate median(list), to: Synod.Test.Stats
  defdelegate ms(us), to: Synod.Test.Stats

  # {p50, p99} medians over rounds of a latency list.
  def latency(rounds, fun) do
    runs = for r <- 1..rounds, do: fun.(r)
    {median(Enum.map(runs, &pct(&1, 50))), median(Enum.map(runs, &pct(&1, 99)))}
  end

  def rate(rounds, fun), do: median(for r <- 1..rounds, do: fun.(r))
end

ctx = Q.start_store("qb")
[client | _] = ctx.nodes -- [ctx.leader]
s = ctx.store
on = fn fun, args -> :erpc.call(client, Q, fun, args, 600_000) end
clients = 4
per = max(div(n, clients), 10)

IO.puts(
  "Synod queue/task benchmark: 3 voters on loopback, #{System.schedulers_online()} schedulers, N=#{n}, #{rounds} rounds, medians"
)

{b50, b99} = QueueBench.latency(rounds, fn _ -> on.(:raw_pairs, [s, n]) end)
{q50, q99} = QueueBench.latency(rounds, fn r -> on.(:pairs, [{s, "lat#{r}"}, n]) end)
{t50, t99} = QueueBench.latency(rounds, fn r -> on.(:cycles, [s, "lat#{r}", n]) end)
brate = QueueBench.rate(rounds, fn _ -> on.(:raw_rate, [s, clients, per]) end)
qrate = QueueBench.rate(rounds, fn r -> on.(:pair_rate, [{s, "rate#{r}"}, clients, per]) end)
trate = QueueBench.rate(rounds, fn r -> on.(:cycle_rate, [s, "rate#{r}", clients, per]) end)

row = fn label, p50, p99, rate ->
  IO.puts(
    "#{String.pad_trailing(label, 34)} p50 #{QueueBench.ms(p50)} ms  p99 #{QueueBench.ms(p99)} ms  " <>
      "#{clients} clients: #{rate}/s  (p50 #{Float.round(p50 / b50, 2)}x baseline, rate #{Float.round(rate / brate, 2)}x baseline)"
  )
end

row.("baseline: store put + delete", b50, b99, brate)
row.("queue: enqueue + dequeue", q50, q99, qrate)
row.("tasks: reserve + terminate", t50, t99, trate)

Q.stop(ctx)
