# Many Raft groups on 3 real :peer nodes (3 voters each, fsync on, KV machine).
#
#   MIX_ENV=test mix run bench/groups_bench.exs [N] [ROUNDS] [ROUND_MS]
#
# N idle groups (default 100), ROUNDS rounds (default 3) of ROUND_MS
# (default 3,000) per throughput shape.
#
# 1. Idle (first, on fresh peers; the groups are stopped before part 2):
#    starts N groups (one start_member per group on each node, the 3 nodes
#    in parallel) and times until every node names a leader for every
#    group; leaders per node then and once the balancer has settled (or
#    after 30 s); memory per member (BEAM process memory of the members,
#    each right after a GC, and the VmRSS growth of each peer divided by N,
#    which includes the C cores and the open files' buffers); CPU per node
#    over 10 s with no traffic
#    (`:erlang.statistics(:runtime)` and utime+stime from /proc/<pid>/stat),
#    and how many members are quiesced (`status.quiesced`; builds without
#    quiescing count none).
# 1b. Restart: the first node is killed (kill -9) with the N groups
#    running, the time until the other two name a leader for every group;
#    then it is started again under its name, its N members started from
#    their directories (recovering their logs), and the time from the
#    start of the VM until every node names a leader for every group.
# 2. Throughput: 32 synchronous clients (spread evenly over the groups and
#    over the 3 nodes, each routing to its group's leader) over 1, 8 and 32
#    groups, fresh groups for each shape; aggregate commands/s, median of
#    ROUNDS rounds, each shape's rounds alternating with the others. The
#    1-group figure of the same run is the baseline of the ratio. Leaders per
#    node printed for each shape once the balancer has settled (it balances
#    all the groups on a node together, not each shape). ROUNDS 0 skips
#    part 2.
#
# GROUPS_BENCH_LOG=files|wal|both (default files) picks the members' log
# (`log:` option; with wal each node's shared WAL is under the bench's
# root). With both, every shape runs once per log in each round, the two
# alternating, and the 1-group :files figure of the same run is the
# baseline. Each round also counts, per node, the member persists and the
# WAL's fdatasyncs (Synod.Test.Raft.fsync_counts/0): with files each
# persist is one fdatasync; with wal the WAL's count is the node's
# fdatasyncs. N = 0 skips part 1.
#
# ERL_AFLAGS="+sbwt none +sbwtdcpu none +sbwtdio none" (passed on to the
# peers, which print the flags they got) takes the schedulers' busy wait
# out of the CPU figures.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster
alias Synod.Test.Raft

[n_idle, rounds, round_ms] =
  case Enum.map(System.argv(), &String.to_integer/1) do
    [n, r, ms] -> [n, r, ms]
    [n, r] -> [n, r, 3_000]
    [n] -> [n, 3, 3_000]
    [] -> [100, 3, 3_000]
  end

defmodule GroupsBench do
  # Starts the members, then waits (up to 300 s) until every node names a
  # leader for every group; prints both times, or how many groups each node
  # knows a leader for when the wait runs out.
  def start(groups, nodes, root, extra \\ []) do
    t0 = System.monotonic_time(:millisecond)

    results = :erpc.multicall(nodes, Raft, :start_members, [groups, nodes, root, extra], 600_000)

    for {:ok, n} <- results, do: true = n == length(groups)
    true = length(results) == length(nodes)
    t1 = System.monotonic_time(:millisecond)
    known = Raft.wait_known(groups, nodes, t1 + 300_000)
    t2 = System.monotonic_time(:millisecond)

    IO.puts(
      "  #{length(groups)} groups: members started in #{t1 - t0} ms, then #{t2 - t1} ms until leaders known: #{inspect(known)}"
    )

    t2 - t0
  end

  def leaders(groups, nodes) do
    {_, per} = :erpc.call(hd(nodes), Raft, :leaders_seen, [groups], 60_000)
    Map.new(nodes, &{short(&1), Map.get(per, &1, 0)})
  end

  def settle(groups, nodes, ms) do
    deadline = System.monotonic_time(:millisecond) + ms

    Stream.repeatedly(fn ->
      per = leaders(groups, nodes)
      counts = Map.values(per)

      if Enum.max(counts) - Enum.min(counts) <= 1 or
           System.monotonic_time(:millisecond) > deadline,
         do: per,
         else: Process.sleep(200) && nil
    end)
    |> Enum.find(& &1)
  end

  def short(node), do: node |> Atom.to_string() |> String.split("@") |> hd()

  def stop(groups, nodes), do: :erpc.multicall(nodes, Raft, :stop_members, [groups], 600_000)

  # 32 clients, client c on node c mod 3 for group c mod G; commands/s.
  def rate(groups, nodes, round_ms), do: elem(rate_and_count(groups, nodes, round_ms), 0)

  # {commands/s, commands}
  def rate_and_count(groups, nodes, round_ms) do
    g = List.to_tuple(groups)

    0..31
    |> Enum.map(fn c ->
      node = Enum.at(nodes, rem(c, length(nodes)))
      group = elem(g, rem(c, tuple_size(g)))

      Task.async(fn ->
        :erpc.call(node, Raft, :client_for, [group, c, round_ms], round_ms + 60_000)
      end)
    end)
    |> Task.await_many(round_ms + 120_000)
    |> then(fn results ->
      rate = results |> Enum.map(fn {n, us} -> n / (us / 1_000_000) end) |> Enum.sum()
      {round(rate), results |> Enum.map(&elem(&1, 0)) |> Enum.sum()}
    end)
  end

  def median(xs), do: Enum.at(Enum.sort(xs), div(length(xs), 2))

  # Members of `groups` quiesced on `node`, of those running there.
  def quiesced(groups, node) do
    Enum.count(groups, fn g ->
      try do
        Map.get(:erpc.call(node, Synod.Raft, :status, [g], 10_000), :quiesced, false)
      catch
        _, _ -> false
      end
    end)
  end

  # kill -9 of `victim`; ms until the others name a leader for every group;
  # then a new VM under its name, its members started from their
  # directories, and ms from the VM's start until every node names a leader
  # for every group. Returns the new peer.
  def restart(victim, groups, nodes, root) do
    survivors = nodes -- [victim]
    Node.monitor(victim, true)
    t0 = System.monotonic_time(:millisecond)
    Synod.LocalCluster.kill(victim)

    receive do
      {:nodedown, ^victim} -> :ok
    after
      30_000 -> raise "no nodedown of #{victim}"
    end

    known = Raft.wait_known(groups, survivors, System.monotonic_time(:millisecond) + 300_000)
    failover = System.monotonic_time(:millisecond) - t0

    IO.puts(
      "  kill -9 of #{short(victim)}: the others name every leader after #{failover} ms: #{inspect(known)}"
    )

    Process.sleep(2_000)
    t1 = System.monotonic_time(:millisecond)
    [{_, ^victim} = peer] = Synod.LocalCluster.start(1, names: [short(victim)])
    t2 = System.monotonic_time(:millisecond)
    n = :erpc.call(victim, Raft, :start_members, [groups, nodes, root], 600_000)
    true = n == length(groups)
    t3 = System.monotonic_time(:millisecond)
    known = Raft.wait_known(groups, nodes, t3 + 300_000)
    t4 = System.monotonic_time(:millisecond)

    IO.puts(
      "  restart of #{short(victim)}: VM up in #{t2 - t1} ms, #{n} members started from disk in #{t3 - t2} ms, " <>
        "then #{t4 - t3} ms until every node names every leader (#{inspect(known)}): #{t4 - t1} ms in all"
    )

    peer
  end

  # {commands/s, fdatasyncs/s per node, CPU ms per 1,000 commands}: the
  # rate of one round; per node, the persists (log: :files) or the WAL's
  # fdatasyncs (log: :wal) per second over it; and the 3 nodes' CPU time
  # (:erlang.statistics(:runtime), summed) per 1,000 commands, which the
  # load of other processes does not change much.
  def counted_rate(groups, nodes, round_ms, log) do
    before = Map.new(nodes, &{&1, :erpc.call(&1, Raft, :fsync_counts, [])})
    t0 = System.monotonic_time(:millisecond)
    {rate, commands} = rate_and_count(groups, nodes, round_ms)
    secs = (System.monotonic_time(:millisecond) - t0) / 1000
    after_ = Map.new(nodes, &{&1, :erpc.call(&1, Raft, :fsync_counts, [])})

    syncs =
      Enum.map(nodes, fn n ->
        {p1, w1, _} = after_[n]
        {p0, w0, _} = before[n]
        round(if(log == :wal, do: w1 - w0, else: p1 - p0) / secs)
      end)

    cpu = Enum.sum(Enum.map(nodes, fn n -> elem(after_[n], 2) - elem(before[n], 2) end))
    {rate, syncs, :erlang.float_to_binary(cpu * 1000 / max(commands, 1), decimals: 1)}
  end
end

root = Path.join(System.tmp_dir!(), "synod-groups-bench-#{System.unique_integer([:positive])}")
u = System.unique_integer([:positive])
peers = LocalCluster.start(3, prefix: "grb")
nodes = Enum.map(peers, &elem(&1, 1))

try do
  {load, _} = System.cmd("uptime", [])

  IO.puts(
    "groups bench: 3 nodes, N=#{n_idle}, #{rounds} rounds of #{round_ms} ms; #{String.trim(load)}"
  )

  logs =
    case System.get_env("GROUPS_BENCH_LOG", "files") do
      "both" -> [:files, :wal]
      "wal" -> [:wal]
      "files" -> [:files]
    end

  IO.puts("logs: #{inspect(logs)}")

  # The schedulers' busy wait, as each peer's emulator was started (the
  # peers inherit ERL_AFLAGS, e.g. "+sbwt none +sbwtdcpu none +sbwtdio
  # none" to take the spinning out of the CPU figures).
  for n <- nodes do
    flags =
      :erpc.call(n, File, :read!, ["/proc/self/cmdline"])
      |> String.split(<<0>>)
      |> Enum.chunk_every(2, 1, [""])
      |> Enum.filter(fn [flag, _] -> String.match?(flag, ~r/^[+-]sbwt/) end)
      |> Enum.map(&Enum.join(&1, " "))

    IO.puts("#{GroupsBench.short(n)} busy-wait flags: #{inspect(flags)}")
  end

  if n_idle > 0 do
    # -- 1. N idle groups ------------------------------------------------------
    rss0 = Map.new(nodes, &{&1, :erpc.call(&1, Raft, :rss, [])})
    idle = for i <- 1..n_idle, do: :"idle#{u}_#{i}"
    ms = GroupsBench.start(idle, nodes, root)
    IO.puts("#{n_idle} idle groups: started and leaders known (or the wait ran out) in #{ms} ms")
    IO.puts("leaders per node at once: #{inspect(GroupsBench.leaders(idle, nodes))}")
    t0 = System.monotonic_time(:millisecond)
    settled = GroupsBench.settle(idle, nodes, 30_000)

    IO.puts(
      "leaders per node after #{System.monotonic_time(:millisecond) - t0} ms of balancing: #{inspect(settled)}"
    )

    Process.sleep(2_000)

    cpu = :erpc.multicall(nodes, Raft, :cpu_over, [10_000], 60_000)
    {load, _} = System.cmd("uptime", [])
    IO.puts("\nidle, 10 s: #{String.trim(load)}")

    IO.puts(
      "| node | runtime ms / 10 s | utime+stime ms / 10 s | CPU % of one core | member process bytes | VmRSS growth per member |"
    )

    IO.puts("| --- | --- | --- | --- | --- | --- |")

    for {n, {:ok, {rt, os}}} <- Enum.zip(nodes, cpu) do
      mem = :erpc.call(n, Raft, :members_memory, [idle], 60_000)
      rss = :erpc.call(n, Raft, :rss, []) - rss0[n]

      IO.puts(
        "| #{GroupsBench.short(n)} | #{rt} | #{os} | #{Float.round(os / 100, 1)} | #{div(mem, n_idle)} | #{div(rss, n_idle)} |"
      )
    end

    IO.puts(
      "members quiesced per node: #{inspect(Enum.map(nodes, &GroupsBench.quiesced(idle, &1)), charlists: :as_lists)} of #{n_idle}"
    )

    # -- 1b. restart of a node holding the N groups ------------------------------
    [victim | _] = nodes
    new_peer = GroupsBench.restart(victim, idle, nodes, root)
    Process.put(:peers, [new_peer | Enum.reject(peers, &(elem(&1, 1) == victim))])
    Process.sleep(3_000)

    IO.puts(
      "after the restart, members quiesced per node: #{inspect(Enum.map(nodes, &GroupsBench.quiesced(idle, &1)), charlists: :as_lists)} of #{n_idle}"
    )

    GroupsBench.stop(idle, nodes)
  end

  # -- 2. throughput over 1, 8, 32 groups ------------------------------------
  if rounds == 0, do: throw(:done)
  shapes = [1, 8, 32]
  keys = for s <- shapes, log <- logs, do: {s, log}

  sets =
    Map.new(keys, fn {s, log} -> {{s, log}, for(i <- 1..s, do: :"tp#{u}_#{log}_#{s}_#{i}")} end)

  extra = fn log -> if log == :wal, do: [log: :wal], else: [] end
  for {s, log} <- keys, do: GroupsBench.start(sets[{s, log}], nodes, root, extra.(log))
  all = Enum.flat_map(keys, &sets[&1])
  per = GroupsBench.settle(all, nodes, 30_000)
  IO.puts("\nthroughput groups (#{length(all)}), leaders per node once balanced: #{inspect(per)}")

  for {s, log} <- keys,
      do:
        IO.puts(
          "#{s} groups (#{log}): leaders per node #{inspect(GroupsBench.leaders(sets[{s, log}], nodes))}"
        )

  # warm-up
  for k <- keys, do: GroupsBench.rate(sets[k], nodes, 500)

  runs =
    for(
      _r <- 1..rounds,
      k <- keys,
      do: {k, GroupsBench.counted_rate(sets[k], nodes, round_ms, elem(k, 1))}
    )
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))

  base = GroupsBench.median(Enum.map(runs[{1, hd(logs)}], &elem(&1, 0)))

  IO.puts("\n32 clients: #{String.trim(elem(System.cmd("uptime", []), 0))}")

  IO.puts(
    "| groups | log | commands/s, every round | median | ratio to 1 group (#{hd(logs)}) | fdatasyncs/s per node, every round | CPU ms per 1,000 commands (3 nodes), every round |"
  )

  IO.puts("| --- | --- | --- | --- | --- | --- | --- |")

  for {s, log} = k <- keys do
    rates = Enum.map(runs[k], &elem(&1, 0))
    syncs = Enum.map(runs[k], &inspect(elem(&1, 1), charlists: :as_lists))
    cpu = Enum.map(runs[k], &elem(&1, 2))
    med = GroupsBench.median(rates)

    IO.puts(
      "| #{s} | #{log} | #{Enum.join(rates, ", ")} | #{med} | #{Float.round(med / base, 2)} | #{Enum.join(syncs, " ")} | #{Enum.join(cpu, ", ")} |"
    )
  end
catch
  :done -> :ok
after
  LocalCluster.stop(Process.get(:peers, peers))
  File.rm_rf(root)
end
