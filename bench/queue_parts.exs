# Where a queue pair's time goes, part by part, each against a store put
# measured in the same loop (issue 18's queue target: enqueue + dequeue
# p50 <= 2.2x a put's p50). 3 voters on real :peer nodes, fsync on, client
# on a follower's node; each iteration runs every part once, in turn, so
# the load of the moment falls on all of them alike:
#
#   MIX_ENV=test mix run bench/queue_parts.exs [N]
#
# Parts: put; a one-put txn; Queue.enqueue/4; Queue.dequeue/3 of the value
# just enqueued; a dequeue from a backlog of N; a delete; a two-put txn
# with a compare and a failure read (the enqueue's shape); the dequeue's
# own txn sent raw; a one-key delete txn with prev_kv; a FIRST delete of a
# prefix holding one key (docs/coordination.md, "Issue 18, branch queue2").

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.Test.Queue, as: Q
n = String.to_integer(List.first(System.argv()) || "300")

# Compiled on the client's node (closures sent to peers must come from
# compiled modules).
src = ~S"""
defmodule QueueParts do
  alias Synod.Store
  alias Synod.Queue

  defp t(f) do
    t0 = System.monotonic_time(:microsecond)
    f.()
    System.monotonic_time(:microsecond) - t0
  end

  def run(s, n) do
    for i <- 1..n, do: {:ok, _, _} = Queue.enqueue(s, "back", "v#{i}")
    it = "synod/q/" <> <<2::16, "q3">> <> "i"
    cl = "synod/q/" <> <<2::16, "q3">> <> "c"

    rows =
      for i <- 1..n do
        k = "m/p/#{i}"
        a = t(fn -> {:ok, _, _} = Store.put(s, k, "v#{i}") end)
        b = t(fn -> {:ok, _, true, _} = Store.txn(s, [], [{:put, "m/t/#{i}", "v#{i}"}], []) end)
        c = t(fn -> {:ok, _, _} = Queue.enqueue(s, "q", "v#{i}") end)
        d = t(fn -> {:ok, _} = Queue.dequeue(s, "q") end)
        e = t(fn -> {:ok, _} = Queue.dequeue(s, "back") end)
        f = t(fn -> {:ok, _, 1, _} = Store.delete(s, k) end)

        g =
          t(fn ->
            {:ok, _, true, _} =
              Store.txn(s, [{:mod_revision, "m/t/#{i}", :>, 0}],
                [{:put, "m/t/#{i}", "w"}, {:put, "m/u/#{i}", "v"}], [{:range, "m/t/#{i}"}])
          end)

        {:ok, _, _} = Queue.enqueue(s, "q3", "v#{i}")

        h =
          t(fn ->
            {:ok, _, true, [{:delete, 1, _}]} =
              Store.txn(s, [{:count, cl, [prefix: true], :==, 0}],
                [{:delete, it, prefix: true, first: true, prev_kv: true}],
                Synod.Coord.Recipe.page_reads(it, cl, nil, true))
          end)

        {:ok, _, _} = Store.put(s, "m/x/#{i}", "v")

        h2 =
          t(fn ->
            {:ok, _, true, [{:delete, 1, _}]} =
              Store.txn(s, [], [{:delete, "m/x/#{i}", prev_kv: true}], [])
          end)

        {:ok, _, _} = Store.put(s, "m/y/#{i}", "v")

        h3 =
          t(fn ->
            {:ok, _, true, [{:delete, 1, _}]} =
              Store.txn(s, [], [{:delete, "m/y/", prefix: true, first: true, prev_kv: true}], [])
          end)

        [a, b, c, d, e, f, g, h, h2, h3]
      end

    for j <- 0..9, do: Synod.Test.Stats.pct(Enum.map(rows, &Enum.at(&1, j)), 50)
  end
end
"""

ctx = Q.start_store("qparts")
[client | _] = ctx.nodes -- [ctx.leader]
_ = :erpc.call(client, Code, :compile_string, [src])
[put | _] = p50s = :erpc.call(client, QueueParts, :run, [ctx.store, n], 600_000)

labels = [
  "store put",
  "txn: one put",
  "Queue.enqueue",
  "Queue.dequeue (just enqueued)",
  "Queue.dequeue (backlog)",
  "store delete",
  "txn: enqueue's shape",
  "txn: dequeue's, raw",
  "txn: one-key delete, prev_kv",
  "txn: FIRST delete of a prefix"
]

IO.puts("queue parts, N=#{n}, p50 each, ratio to the put p50 of the same loop")

for {label, us} <- Enum.zip(labels, p50s),
    do: IO.puts("#{String.pad_trailing(label, 32)} #{us} us  #{Float.round(us / put, 2)}x")

IO.puts(
  "enqueue + dequeue (sum of p50s): #{Float.round((Enum.at(p50s, 2) + Enum.at(p50s, 3)) / put, 2)}x put"
)

Q.stop(ctx)
