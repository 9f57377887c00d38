# What the client side of one lock + unlock spends before any message is
# sent, in reductions of the calling process (not a speed bench: counts,
# the same on a busy machine; no baseline ratio). Runs unchanged on older
# commits (public functions only):
#
#   MIX_ENV=test mix run bench/coord_encode.exs
#
# Per call, the loop's own cost (an empty fun) subtracted, 10,000 calls:
#   * Synod.Coord.Options.validate!/2 of the lock's options ([ttl: 5000]);
#   * Synod.Store.Command.txn/3 of the lock's join (absent compare, a put
#     with a lease and the contenders' range in both branches) and of its
#     release (a create_revision compare, a delete);
#   * the pieces: Command.range/2 (prefix, keys only), Command.put/3 with
#     a lease, Command.prefix_end/1.

alias Synod.Coord.Options
alias Synod.Store.Command

n = 10_000

reds = fn fun ->
  fun.()
  {:reductions, r0} = Process.info(self(), :reductions)
  for _ <- 1..n, do: fun.()
  {:reductions, r1} = Process.info(self(), :reductions)
  (r1 - r0) / n
end

empty = reds.(fn -> :ok end)

schema = [
  ttl: [type: {:ms, 30}, default: 10_000],
  timeout: [type: :timeout, default: :infinity],
  call_timeout: [type: :pos_integer, default: 5_000]
]

prefix = "synod/lock/bench/lock/"
key = prefix <> "1A.3F"
contenders = {:range, prefix, prefix: true, keys_only: true}

rows = [
  {"Options.validate!/2 (the lock's options)", fn -> Options.validate!([ttl: 5_000], schema) end},
  {"Command.txn/3, the lock's join",
   fn ->
     Command.txn([{:absent, key}], [{:put, key, "n@h #PID<0.1.0>", lease: 26}, contenders], [
       contenders
     ])
   end},
  {"Command.txn/3, the lock's release",
   fn -> Command.txn([{:create_revision, key, :==, 1234}], [{:delete, key}], []) end},
  {"Command.range/2 (prefix, keys only)",
   fn -> Command.range(prefix, prefix: true, keys_only: true) end},
  {"Command.put/3 with a lease", fn -> Command.put(key, "v", lease: 26) end},
  {"Command.prefix_end/1", fn -> Command.prefix_end(prefix) end}
]

IO.puts("reductions per call (#{n} calls, loop cost #{Float.round(empty, 1)} subtracted)")

for {name, fun} <- rows,
    do: IO.puts("  #{String.pad_trailing(name, 42)} #{Float.round(reds.(fun) - empty, 1)}")
