# Coordination cost counter (not a speed bench: no wall clock, so no
# baseline ratio): what one operation of bench/coord_bench.exs costs in
# counts that do not depend on the machine's load, so two builds can be
# compared on a busy machine (docs/coordination.md, "Against 47d4d8d").
#
#   MIX_ENV=test mix run bench/coord_counts.exs [OPS]
#
# On 3 real :peer nodes (a 3-voter store, fsync on), client on a follower,
# OPS (default 200) sequential operations of each kind: put, lock + unlock
# (Synod.Lock.lock/4, empty fun), election claim (a fresh candidate: start,
# elected, close), and bench/queue_bench.exs's queue enqueue + dequeue and
# task reserve + terminate (with the task's creation, which the bench does
# before it times). Per operation:
#   * the client's store requests by function (Synod.Store.*);
#   * Raft proposals on the leader (:synod_nif.raft_propose/2);
#   * Raft messages stepped and fsyncs on each node;
#   * reductions: every process of each node, and its Raft member alone.
# Call counts come from :cprof (call-count breakpoints), switched on for the
# counted functions only after the warm-up; the reductions are measured in
# a second pass without them. Runs unchanged on older commits (it uses only
# Synod.Test.CoordBench's and Synod.Test.Queue's loops).

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster
alias Synod.Test.CoordBench

ops =
  case System.argv() do
    [n] -> String.to_integer(n)
    [] -> 200
  end

defmodule CoordCounts do
  @store_fns [
    :put,
    :get,
    :range,
    :delete,
    :txn,
    :grant,
    :keep_alive,
    :revoke,
    :watch,
    :unwatch,
    :revision
  ]

  def store_fns, do: @store_fns

  # {module, function} pairs counted on every node (a function with default
  # arguments counts once: the most-called arity).
  def counted,
    do:
      [{:synod_nif, :raft_propose}, {:synod_nif, :raft_step}, {:prim_file, :sync_nif}] ++
        for(f <- @store_fns, do: {Synod.Store, f})

  def start(nodes) do
    for node <- nodes, {m, f} <- counted() do
      {:module, _} = :erpc.call(node, Code, :ensure_loaded, [m])
      :erpc.call(node, :cprof, :start, [m, f])
    end
  end

  # %{node => %{{m, f} => calls}}, and stops counting.
  def collect(nodes) do
    for node <- nodes, into: %{} do
      counts =
        for {m, f} <- counted(), into: %{} do
          calls =
            case :erpc.call(node, :cprof, :analyse, [m, 0]) do
              {^m, _total, funs} -> Enum.max([0 | for({{^m, ^f, _}, c} <- funs, do: c)])
              _ -> 0
            end

          {{m, f}, calls}
        end

      :erpc.call(node, :cprof, :stop, [])
      {node, counts}
    end
  end

  def member(node, store),
    do: :erpc.call(node, Process, :whereis, [:erpc.call(node, Synod.Raft, :member_name, [store])])

  def reductions(nodes, store) do
    for node <- nodes, into: %{} do
      {total, _} = :erpc.call(node, :erlang, :statistics, [:reductions])
      {:reductions, member} = :erpc.call(node, Process, :info, [member(node, store), :reductions])
      {node, {total, member}}
    end
  end
end

dir = Path.join(System.tmp_dir!(), "synod-coord-counts-#{System.unique_integer([:positive])}")
peers = LocalCluster.start(3, prefix: "cc")
nodes = Enum.map(peers, &elem(&1, 1))
store = :coord_counts

try do
  leader = Synod.Test.Coord.start_store(store, nodes, dir)
  [client | _] = nodes -- [leader]
  [other] = nodes -- [leader, client]
  on = fn fun, args -> :erpc.call(client, CoordBench, fun, args, 600_000) end
  on.(:puts, [store, 20])
  on.(:locks, [store, "bench/warm", 20])
  on.(:claims, [store, 5])

  q = fn fun, args -> :erpc.call(client, Synod.Test.Queue, fun, args, 600_000) end

  # Each kind runs twice (counted, then measured in reductions): `pass` is 1 or 2.
  kinds = [
    {"put", fn _pass -> on.(:puts, [store, ops]) end},
    {"lock + unlock", fn _pass -> on.(:locks, [store, "bench/lock", ops]) end},
    {"election claim (+ close)", fn _pass -> on.(:claims, [store, ops]) end},
    {"queue enqueue + dequeue", fn pass -> q.(:pairs, [{store, "cq#{pass}"}, ops]) end},
    {"task create + reserve + terminate", fn pass -> q.(:cycles, [store, "ct#{pass}", ops]) end}
  ]

  IO.puts(
    "3 voters on 127.0.0.1, client on a follower; #{ops} operations of each kind, per operation:"
  )

  roles = [{"leader", leader}, {"client", client}, {"other", other}]
  per = fn n -> Float.round(n / ops, 2) end

  for {name, run} <- kinds do
    CoordCounts.start(nodes)
    run.(1)
    counts = CoordCounts.collect(nodes)
    r0 = CoordCounts.reductions(nodes, store)
    run.(2)
    r1 = CoordCounts.reductions(nodes, store)

    store_calls =
      for f <- CoordCounts.store_fns(),
          c = counts[client][{Synod.Store, f}],
          c > 0,
          do: "#{f} #{per.(c)}"

    IO.puts("\n#{name}")
    IO.puts("  client store requests: #{Enum.join(store_calls, ", ")}")
    IO.puts("  raft proposals (leader): #{per.(counts[leader][{:synod_nif, :raft_propose}])}")

    for {role, node} <- roles do
      {t0, m0} = r0[node]
      {t1, m1} = r1[node]

      IO.puts(
        "  #{String.pad_trailing(role, 7)} raft messages stepped #{per.(counts[node][{:synod_nif, :raft_step}])}, " <>
          "fsyncs #{per.(counts[node][{:prim_file, :sync_nif}])}, " <>
          "reductions #{round((t1 - t0) / ops)} (member #{round((m1 - m0) / ops)})"
      )
    end
  end
after
  LocalCluster.stop(peers)
  File.rm_rf(dir)
end
