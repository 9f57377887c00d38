# Synod's store side by side with etcd 3.4 (Debian's etcd-server, installed
# here with apt-get when `etcd` is missing; never by the test command).
#
#   MIX_ENV=test mix run bench/etcd_bench.exs [ROUNDS] [OPS]
#
# 3 etcd members and 3 Synod voters on 127.0.0.1, fsync on, data on the same
# disk (System.tmp_dir!()). etcd's client: HTTP/1.1 keep-alive to its v3 JSON
# gateway from this VM (Synod.Test.Etcd: one connection per client, bodies
# built by hand); its serializable read is printed as the floor that path
# costs. Synod's client: an in-VM call on a follower's node, and once more
# on a node with no member (Synod's "non-member client"; every etcd client
# is one). The two systems alternate, A/B then B/A, over ROUNDS rounds
# (default 3, at least 3 for the figures to count); OPS (default 300)
# sequential operations per figure per round. Medians of the rounds.
#
# Figures: sequential put p50/p99, 16-client puts/s, compare-and-swap with
# 16 clients on distinct keys, lock+unlock with 1 client and with 8
# contending (cycles/s, max/min per client), linearizable get p50, and the
# non-member client's put p50. Target: Synod >= 2x etcd on every figure;
# Synod's sequential put p50 below etcd's minus its gateway floor.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster
alias Synod.Test.{CoordBench, Etcd, Stats}
alias Synod.Test.Store, as: S

[rounds, ops] =
  case System.argv() do
    [r, o] -> [String.to_integer(r), String.to_integer(o)]
    [r] -> [String.to_integer(r), 300]
    [] -> [3, 300]
  end

defmodule EtcdBench do
  def contention_stats(counts, ms),
    do: {Enum.sum(counts) / (ms / 1000), Enum.max(counts) / max(Enum.min(counts), 1)}

  def synod_contend(store, nodes, key, ms) do
    clients =
      for i <- 0..7 do
        node = Enum.at(nodes, rem(i, length(nodes)))
        Node.spawn(node, CoordBench, :contend, [:synod, store, key, nodes, ms, self()])
      end

    for c <- clients, do: send(c, :go)
    for c <- clients, do: receive(do: ({:count, ^c, n} -> n))
  end
end

dir = Path.join(System.tmp_dir!(), "synod-etcd-bench-#{System.unique_integer([:positive])}")
base = 42_000 + rem(System.unique_integer([:positive]), 500) * 20
{etcd_pids, ports} = Etcd.start_cluster(Path.join(dir, "etcd"), base)
# The etcd members go with this VM whatever fails below.
System.at_exit(fn _ -> Etcd.stop_cluster(etcd_pids) end)
peers = LocalCluster.start(4, prefix: "eb")
[outsider | nodes] = Enum.map(peers, &elem(&1, 1))
store = :etcd_bench

try do
  :ok = Synod.Store.start(store, nodes, Path.join(dir, "synod"))
  leader = Synod.Test.Raft.wait_leader(store, nodes)
  [member | _] = nodes -- [leader]
  on = fn node, mod, fun, args -> :erpc.call(node, mod, fun, args, 600_000) end
  [port | _] = ports
  contend_ms = 3_000

  etcd = fn r ->
    puts = Etcd.puts(port, ops)
    cont = Etcd.contend(ports, "bench/contended-#{r}", 8, contend_ms)

    %{
      put50: Stats.pct(puts, 50),
      put99: Stats.pct(puts, 99),
      rate16: Etcd.put_rate(ports, 16, div(ops, 2)),
      cas16: Etcd.cas_rate(ports, 16, div(ops, 4)),
      lock1: 1_000_000 / Stats.median(Etcd.locks(port, "bench/lock-#{r}", div(ops, 2))),
      lock8: EtcdBench.contention_stats(cont, contend_ms),
      get50: Stats.median(Etcd.gets(port, ops, false)),
      floor50: Stats.median(Etcd.gets(port, ops, true)),
      outsider50: Stats.pct(puts, 50)
    }
  end

  synod = fn r ->
    puts = on.(member, CoordBench, :puts, [store, ops])
    cont = EtcdBench.synod_contend(store, nodes, "bench/contended-#{r}", contend_ms)

    %{
      put50: Stats.pct(puts, 50),
      put99: Stats.pct(puts, 99),
      rate16: on.(member, S, :put_rate, [store, 16, div(ops, 2)]),
      cas16: on.(member, S, :cas_rate, [store, 16, div(ops, 4)]),
      lock1:
        1_000_000 /
          Stats.median(on.(member, CoordBench, :locks, [store, "bench/lock-#{r}", div(ops, 2)])),
      lock8: EtcdBench.contention_stats(cont, contend_ms),
      get50: Stats.median(on.(member, S, :gets, [store, ops])),
      floor50: nil,
      outsider50: Stats.median(on.(outsider, CoordBench, :puts, [store, ops]))
    }
  end

  # Warm up both.
  Etcd.puts(port, 50)
  on.(member, CoordBench, :puts, [store, 50])
  on.(outsider, CoordBench, :puts, [store, 50])
  on.(member, CoordBench, :locks, [store, "bench/warm", 20])

  IO.puts(
    "Synod vs etcd #{elem(System.cmd("etcd", ["--version"]), 0) |> String.split("\n") |> hd()}: " <>
      "3 members each on 127.0.0.1, #{System.schedulers_online()} schedulers, #{rounds} rounds x #{ops} ops, A/B alternating, medians"
  )

  runs =
    for r <- 1..rounds do
      if rem(r, 2) == 1,
        do:
          (
            e = etcd.(r)
            {e, synod.(r)}
          ),
        else:
          (
            s = synod.(r)
            {etcd.(r), s}
          )
    end

  med = fn side, f -> Stats.median(Enum.map(runs, &f.(elem(&1, side)))) end
  e = fn f -> med.(0, f) end
  s = fn f -> med.(1, f) end
  ratio = fn a, b -> Float.round(a / b, 2) end

  row = fn label, ev, sv, unit, better ->
    x = if better == :higher, do: ratio.(sv, ev), else: ratio.(ev, sv)

    IO.puts(
      "  #{String.pad_trailing(label, 44)} etcd #{String.pad_leading(unit.(ev), 10)}   Synod #{String.pad_leading(unit.(sv), 10)}   Synod/etcd #{x}x"
    )
  end

  ms = fn us -> "#{Stats.ms(us)} ms" end
  per_s = fn v -> "#{round(v)}/s" end

  row.("sequential put p50", e.(& &1.put50), s.(& &1.put50), ms, :lower)
  row.("sequential put p99", e.(& &1.put99), s.(& &1.put99), ms, :lower)
  row.("16 clients, puts", e.(& &1.rate16), s.(& &1.rate16), per_s, :higher)

  row.(
    "compare-and-swap, 16 clients, distinct keys",
    e.(& &1.cas16),
    s.(& &1.cas16),
    per_s,
    :higher
  )

  row.("lock + unlock, 1 client", e.(& &1.lock1), s.(& &1.lock1), per_s, :higher)
  row.("8 clients on one lock", e.(&elem(&1.lock8, 0)), s.(&elem(&1.lock8, 0)), per_s, :higher)

  IO.puts(
    "  #{String.pad_trailing("  fairness, max/min cycles per client", 44)} etcd #{Float.round(e.(&elem(&1.lock8, 1)) * 1.0, 3)}   Synod #{Float.round(s.(&elem(&1.lock8, 1)) * 1.0, 3)}"
  )

  row.("linearizable get p50", e.(& &1.get50), s.(& &1.get50), ms, :lower)

  row.(
    "put p50, client on a node with no member",
    e.(& &1.outsider50),
    s.(& &1.outsider50),
    ms,
    :lower
  )

  floor = e.(& &1.floor50)
  IO.puts("  etcd's gateway floor (serializable get p50): #{ms.(floor)}")

  IO.puts(
    "  etcd sequential put p50 minus that floor: #{ms.(e.(& &1.put50) - floor)}; Synod's: #{ms.(s.(& &1.put50))} " <>
      "(#{ratio.(e.(& &1.put50) - floor, s.(& &1.put50))}x)"
  )
after
  LocalCluster.stop(peers)
  Etcd.stop_cluster(etcd_pids)
  File.rm_rf(dir)
end
