# Where the CPU of a command goes when 32 synchronous clients are spread
# over 1 or over 32 Raft groups (issue 19, branch groupscpu): counted
# rather than timed, so the load of other processes on the machine changes
# little of it. 3 voters on real :peer nodes (fsync on, the KV machine),
# the same client shape as bench/groups_bench.exs (client c on node c mod 3
# for group c mod G, each routing to its group's leader).
#
#   MIX_ENV=test mix run bench/groups_profile.exs [ROUND_MS] [SHAPES]
#
# ROUND_MS (default 3,000) per round, SHAPES the group counts (default
# "1,32"). GROUPS_BENCH_LOG=files|wal|both (default both) as in
# groups_bench. For every shape and log, on fresh groups:
#
# 1. A plain round (nothing traced): commands/s; CPU ms per 1,000 commands
#    of the 3 nodes, as `:erlang.statistics(:runtime)` and as utime+stime
#    from /proc (the OS's count, which includes the schedulers' busy wait);
#    and reductions per command by process kind, summed over the 3 nodes:
#    the group members, the WAL, and the rest (clients, router, erpc,
#    distribution; `:erlang.statistics(:exact_reductions)` less the two).
# 2. A counted round: per command, summed over the 3 nodes, the calls of
#    the functions below (`:erlang.trace_pattern(MFA, true, [:local,
#    :call_count])`: NIF calls, Readies, persists, WAL batches) and the
#    messages the members and the WAL received, by kind
#    (`:erlang.trace(Pid, true, [:receive])` on each of them; raft
#    messages by their type, an append with no entry apart).
# 3. With GROUPS_PROFILE_EPROF=1, an eprof round of the first node's
#    members and WAL: the functions with the most time, with calls per
#    command (the times are under call tracing: read them as shares).
#
# Run it with the schedulers' busy wait off to separate spinning from work:
#   ERL_AFLAGS="+sbwt none +sbwtdcpu none +sbwtdio none" MIX_ENV=test mix run bench/groups_profile.exs
# (the peers inherit ERL_AFLAGS; the script prints the flags each peer's
# emulator was started with). GROUPS_PROFILE_OPTS="heartbeat_tick: 4"
# (Elixir keyword source) adds member options to every group.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster
alias Synod.Test.Raft

{:module, peer_mod, peer_bin, _} =
  defmodule GroupsProfile.Peer do
    @moduledoc false
    # Runs on each peer (loaded there with :code.load_binary/3).

    # raft message types by their number (c_src/raft.h)
    @types [
      :raft_other,
      :prevote,
      :prevote_resp,
      :vote,
      :vote_resp,
      :append,
      :append_resp,
      :heartbeat,
      :heartbeat_resp,
      :snapshot,
      :timeout_now,
      :snapshot_resp
    ]

    @doc """
    One synchronous client, as Synod.Test.Raft.client_for/3 but a command
    refused while the balancer moves the group's leader
    (`{:error, :transferring}`) is sent again rather than stopping the
    round: {commands, microseconds}.
    """
    def client_for(group, c, ms) do
      t0 = System.monotonic_time(:microsecond)
      n = client_loop(group, c, t0 + ms * 1_000, 0)
      {n, System.monotonic_time(:microsecond) - t0}
    end

    defp client_loop(group, c, deadline, n) do
      if System.monotonic_time(:microsecond) >= deadline do
        n
      else
        case Synod.Raft.command(group, {:put, {c, n}, n}, timeout: 30_000) do
          {:ok, _} -> client_loop(group, c, deadline, n + 1)
          {:error, :transferring} -> client_loop(group, c, deadline, n)
        end
      end
    end

    @doc "Counters of this node now: reductions by process kind, CPU ms."
    def snapshot(groups) do
      {total, _} = :erlang.statistics(:exact_reductions)

      members =
        groups
        |> Enum.map(&Process.whereis(Synod.Raft.member_name(&1)))
        |> Enum.reject(&is_nil/1)
        |> Enum.map(&reductions/1)
        |> Enum.sum()

      wal =
        case Process.whereis(Synod.Raft.Wal) do
          nil -> 0
          pid -> reductions(pid)
        end

      {runtime, _} = :erlang.statistics(:runtime)
      %{total: total, members: members, wal: wal, runtime: runtime, os: proc_cpu_ms()}
    end

    defp reductions(pid) do
      case Process.info(pid, :reductions) do
        {:reductions, r} -> r
        nil -> 0
      end
    end

    defp proc_cpu_ms do
      [_, after_comm] = String.split(File.read!("/proc/self/stat"), ") ", parts: 2)
      fields = String.split(after_comm)
      (String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))) * 10
    end

    @doc "The emulator flags this VM was started with that name the busy wait."
    def busy_wait_flags do
      File.read!("/proc/self/cmdline")
      |> String.split(<<0>>)
      |> Enum.chunk_every(2, 1, [""])
      |> Enum.filter(fn [flag, _] -> String.match?(flag, ~r/^[+-]sbwt/) end)
      |> Enum.map(&Enum.join(&1, " "))
    end

    @doc "Starts call counting of `mfas` and receive tracing of the members and the WAL."
    def count_start(groups, mfas) do
      for mfa <- mfas, do: :erlang.trace_pattern(mfa, true, [:local, :call_count])
      parent = self()
      pids = pids(groups)

      tracer =
        spawn(fn ->
          for {_kind, pid} <- pids, do: :erlang.trace(pid, true, [:receive, {:tracer, self()}])
          send(parent, :tracing)
          kinds = Map.new(pids, fn {kind, pid} -> {pid, kind} end)
          count(kinds, %{})
        end)

      receive do: (:tracing -> :ok)
      # (each :erpc call runs in a process of its own)
      :persistent_term.put({__MODULE__, :tracer}, {tracer, pids})
      :ok
    end

    @doc "Stops what count_start/2 started; returns {calls per MFA, messages per {process kind, message kind}}."
    def count_stop(mfas) do
      {tracer, pids} = :persistent_term.get({__MODULE__, :tracer})

      for {_kind, pid} <- pids do
        try do
          :erlang.trace(pid, false, [:receive])
          :erlang.trace_delivered(pid)
          receive do: ({:trace_delivered, ^pid, _} -> :ok)
        rescue
          ArgumentError -> :ok
        end
      end

      calls =
        Map.new(mfas, fn mfa ->
          n =
            case :erlang.trace_info(mfa, :call_count) do
              {:call_count, n} when is_integer(n) -> n
              _ -> 0
            end

          {mfa, n}
        end)

      for mfa <- mfas, do: :erlang.trace_pattern(mfa, false, [:local, :call_count])
      send(tracer, {:done, self()})
      received = receive do: ({:received, counts} -> counts)
      {calls, received}
    end

    defp pids(groups) do
      members =
        for g <- groups, pid = Process.whereis(Synod.Raft.member_name(g)), do: {:member, pid}

      case Process.whereis(Synod.Raft.Wal) do
        nil -> members
        wal -> [{:wal, wal} | members]
      end
    end

    # Skips `n` LEB128 varints.
    defp skip(bin, 0), do: bin
    defp skip(<<1::1, _::7, rest::binary>>, n), do: skip(rest, n)
    defp skip(<<0::1, _::7, rest::binary>>, n), do: skip(rest, n - 1)
    defp skip(<<>>, _n), do: <<>>

    defp count(kinds, acc) do
      receive do
        # (a receive ... after that timed out is traced as `timeout`: no message)
        {:trace, _pid, :receive, :timeout} ->
          count(kinds, acc)

        {:trace, pid, :receive, msg} ->
          key = {Map.get(kinds, pid, :other), kind(msg)}
          count(kinds, Map.update(acc, key, 1, &(&1 + 1)))

        {:done, from} ->
          send(from, {:received, acc})
      end
    end

    # A raft message by its type (docs/raft.md, "Wire format"); an append
    # that carries no entry (it only moves the commit index) apart.
    defp kind({:synod_raft, _, _, _, <<1, 5, _flags, rest::binary>>}) do
      case skip(rest, 6) do
        <<0, _::binary>> -> :append_empty
        _ -> :append
      end
    end

    defp kind({:synod_raft, _, _, _, <<1, type, _::binary>>}),
      do: Enum.at(@types, type, :raft_other)

    defp kind({:synod_raft, _, _, _, _}), do: :raft_other
    defp kind(:tick), do: :tick
    defp kind(:flush), do: :flush
    defp kind({:synod_wal_synced, _}), do: :wal_notice
    defp kind({:wal_append, _, _, _, _, _, _}), do: :wal_append
    defp kind({:"$gen_call", _, {:command, _, _}}), do: :command
    defp kind({:"$gen_call", _, _}), do: :other_call
    defp kind({:raft_events, _}), do: :events
    defp kind({ref, _}) when is_reference(ref), do: :reply
    defp kind(msg) when is_tuple(msg) and is_atom(elem(msg, 0)), do: elem(msg, 0)
    defp kind(msg) when is_tuple(msg), do: :other
    defp kind(msg) when is_atom(msg), do: msg
    defp kind(_), do: :other
  end

[round_ms, shapes] =
  case System.argv() do
    [ms, s] -> [String.to_integer(ms), Enum.map(String.split(s, ","), &String.to_integer/1)]
    [ms] -> [String.to_integer(ms), [1, 32]]
    [] -> [3_000, [1, 32]]
  end

logs =
  case System.get_env("GROUPS_BENCH_LOG", "both") do
    "both" -> [:files, :wal]
    "wal" -> [:wal]
    "files" -> [:files]
  end

# GROUPS_PROFILE_OPTS: more member options for every group, as Elixir
# keyword-list source (e.g. "heartbeat_tick: 4"), to see what a setting
# changes per command.
member_opts =
  case System.get_env("GROUPS_PROFILE_OPTS") do
    nil -> []
    src -> elem(Code.eval_string("[" <> src <> "]"), 0)
  end

member = Synod.Raft.Member
storage = Synod.Raft.Storage
wal = Synod.Raft.Wal

counted = [
  {:synod_nif, :raft_ready, 1},
  {:synod_nif, :raft_step, 2},
  {:synod_nif, :raft_propose, 2},
  {:synod_nif, :raft_persisted, 2},
  {:synod_nif, :raft_tick, 1},
  {:synod_nif, :raft_quiesced, 1},
  {:synod_nif, :raft_status, 1},
  {member, :drain, 1},
  {member, :persist, 5},
  {member, :send_all, 2},
  {member, :apply_entry, 2},
  {member, :notify, 2},
  {member, :hand_to_wal, 2},
  {member, :confirm, 2},
  {member, :take_notices, 1},
  {Synod.Raft.Wal.Pending, :synced, 2},
  {storage, :sync, 1},
  {storage, :flush, 1},
  {:file, :datasync, 1},
  {wal, :write_batch, 1},
  {Synod.Telemetry, :attached?, 1},
  {Synod.Telemetry, :execute, 3},
  {Path, :expand, 1},
  {:erlang, :process_info, 2},
  {:erlang, :send_after, 3},
  {:erlang, :cancel_timer, 1}
]

defmodule GroupsProfile do
  def short(node), do: node |> Atom.to_string() |> String.split("@") |> hd()

  def start(groups, nodes, root, extra) do
    for {:ok, n} <-
          :erpc.multicall(nodes, Raft, :start_members, [groups, nodes, root, extra], 600_000),
        do: true = n == length(groups)

    :all = Raft.wait_known(groups, nodes, System.monotonic_time(:millisecond) + 300_000)
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

  # 32 clients, client c on node c mod 3 for group c mod G: {commands/s, commands}.
  def run(groups, nodes, round_ms) do
    g = List.to_tuple(groups)

    0..31
    |> Enum.map(fn c ->
      node = Enum.at(nodes, rem(c, length(nodes)))
      group = elem(g, rem(c, tuple_size(g)))

      Task.async(fn ->
        :erpc.call(node, GroupsProfile.Peer, :client_for, [group, c, round_ms], round_ms + 60_000)
      end)
    end)
    |> Task.await_many(round_ms + 120_000)
    |> then(fn results ->
      rate = results |> Enum.map(fn {n, us} -> n / (us / 1_000_000) end) |> Enum.sum()
      {round(rate), results |> Enum.map(&elem(&1, 0)) |> Enum.sum()}
    end)
  end

  def snapshot(groups, nodes),
    do: Enum.map(nodes, &:erpc.call(&1, GroupsProfile.Peer, :snapshot, [groups]))

  def plain(groups, nodes, round_ms) do
    s0 = snapshot(groups, nodes)
    {rate, n} = run(groups, nodes, round_ms)
    s1 = snapshot(groups, nodes)
    d = fn key -> Enum.sum(Enum.zip_with(s1, s0, &(&1[key] - &2[key]))) end
    members = d.(:members)
    wal = d.(:wal)
    rest = d.(:total) - members - wal
    n = max(n, 1)

    %{
      rate: rate,
      commands: n,
      runtime: 1000 * d.(:runtime) / n,
      os: 1000 * d.(:os) / n,
      red_members: members / n,
      red_wal: wal / n,
      red_rest: rest / n
    }
  end

  def counts(groups, nodes, round_ms, mfas) do
    for n <- nodes, do: :ok = :erpc.call(n, GroupsProfile.Peer, :count_start, [groups, mfas])
    {_rate, n} = run(groups, nodes, round_ms)
    results = Enum.map(nodes, &:erpc.call(&1, GroupsProfile.Peer, :count_stop, [mfas]))
    n = max(n, 1)

    calls = Map.new(mfas, fn mfa -> {mfa, Enum.sum(Enum.map(results, &elem(&1, 0)[mfa])) / n} end)

    received =
      results
      |> Enum.map(&elem(&1, 1))
      |> Enum.reduce(%{}, &Map.merge(&1, &2, fn _, a, b -> a + b end))
      |> Map.new(fn {k, v} -> {k, v / n} end)

    {calls, received}
  end

  def eprof(groups, nodes, round_ms, top) do
    node = hd(nodes)

    pids =
      for(
        g <- groups,
        pid = :erpc.call(node, Process, :whereis, [Synod.Raft.member_name(g)]),
        do: pid
      ) ++ List.wrap(:erpc.call(node, Process, :whereis, [Synod.Raft.Wal]))

    log = Path.join(System.tmp_dir!(), "synod-eprof-#{System.unique_integer([:positive])}.txt")
    {:ok, _} = :erpc.call(node, :eprof, :start, [])
    :profiling = :erpc.call(node, :eprof, :start_profiling, [pids])
    {_rate, n} = run(groups, nodes, round_ms)
    :profiling_stopped = :erpc.call(node, :eprof, :stop_profiling, [])
    :ok = :erpc.call(node, :eprof, :log, [String.to_charlist(log)])
    {:ok, quiet} = StringIO.open("")
    me = self()

    spawn(fn ->
      Process.group_leader(self(), quiet)
      :erpc.call(node, :eprof, :analyze, [:total, [{:sort, :time}]])
      send(me, :analyzed)
    end)

    receive do: (:analyzed -> :ok)
    :erpc.call(node, :eprof, :stop, [])
    text = File.read!(log)
    File.rm(log)

    rows =
      for line <- String.split(text, "\n"),
          [fun, calls, _pct, us | _] <- [String.split(line)],
          match?({_, ""}, Integer.parse(calls)),
          match?({_, ""}, Integer.parse(us)),
          String.contains?(fun, "/"),
          do: {fun, String.to_integer(calls), String.to_integer(us)}

    total = rows |> Enum.map(&elem(&1, 2)) |> Enum.sum() |> max(1)
    # n counts the commands of all 3 nodes; the profile is one node's
    IO.puts("  eprof of #{short(node)}'s members and WAL (#{n} commands on the 3 nodes):")

    for {f, c, us} <- rows |> Enum.sort_by(&(-elem(&1, 2))) |> Enum.take(top) do
      IO.puts(
        "    #{String.pad_trailing(f, 62)} #{:erlang.float_to_binary(c / n, decimals: 3)} calls/cmd  #{Float.round(100 * us / total, 1)}% time"
      )
    end
  end

  def fmt(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
end

root = Path.join(System.tmp_dir!(), "synod-groups-profile-#{System.unique_integer([:positive])}")
u = System.unique_integer([:positive])
peers = LocalCluster.start(3, prefix: "grp")
nodes = Enum.map(peers, &elem(&1, 1))

for n <- nodes,
    do:
      {:module, _} =
        :erpc.call(n, :code, :load_binary, [peer_mod, ~c"groups_profile.exs", peer_bin])

try do
  load = fn -> String.trim(elem(System.cmd("uptime", []), 0)) end

  IO.puts(
    "groups profile: 3 nodes, rounds of #{round_ms} ms, shapes #{inspect(shapes, charlists: :as_lists)}, logs #{inspect(logs)}, member options #{inspect(member_opts)}; #{load.()}"
  )

  for n <- nodes do
    IO.puts(
      "  #{GroupsProfile.short(n)} busy-wait flags: #{inspect(:erpc.call(n, GroupsProfile.Peer, :busy_wait_flags, []))}"
    )
  end

  keys = for s <- shapes, log <- logs, do: {s, log}

  sets =
    Map.new(keys, fn {s, log} -> {{s, log}, for(i <- 1..s, do: :"gp#{u}_#{log}_#{s}_#{i}")} end)

  for {s, log} = k <- keys do
    extra = if log == :wal, do: [log: :wal] ++ member_opts, else: member_opts
    GroupsProfile.start(sets[k], nodes, root, extra)
    IO.puts("  #{s} groups (#{log}) started")
  end

  all = Enum.flat_map(keys, &sets[&1])
  IO.puts("leaders per node once balanced: #{inspect(GroupsProfile.settle(all, nodes, 30_000))}")
  # (a transfer the balancer still has running would fail a client)
  Process.sleep(3_000)
  # (fsync_counts attaches the bench's [:synod, :raft, :fsync] handler, as in groups_bench)
  for n <- nodes, do: :erpc.call(n, Raft, :fsync_counts, [])
  for k <- keys, do: GroupsProfile.run(sets[k], nodes, 500)

  plain = Map.new(keys, fn k -> {k, GroupsProfile.plain(sets[k], nodes, round_ms)} end)
  counts = Map.new(keys, fn k -> {k, GroupsProfile.counts(sets[k], nodes, round_ms, counted)} end)

  IO.puts("\nplain rounds (#{load.()}); per command, the 3 nodes summed:")

  IO.puts(
    "| groups | log | commands/s | runtime CPU ms / 1,000 | utime+stime ms / 1,000 | reductions: members | WAL | rest | all |"
  )

  IO.puts("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")

  for {s, log} = k <- keys do
    p = plain[k]

    IO.puts(
      "| #{s} | #{log} | #{p.rate} | #{round(p.runtime)} | #{round(p.os)} | #{round(p.red_members)} | #{round(p.red_wal)} | #{round(p.red_rest)} | #{round(p.red_members + p.red_wal + p.red_rest)} |"
    )
  end

  IO.puts("\ncounted rounds: calls per command, the 3 nodes summed")
  IO.puts("| function | " <> Enum.map_join(keys, " | ", fn {s, l} -> "#{s} #{l}" end) <> " |")
  IO.puts("| --- | " <> Enum.map_join(keys, " | ", fn _ -> "---" end) <> " |")

  for {m, f, a} = mfa <- counted do
    IO.puts(
      "| #{inspect(m)}.#{f}/#{a} | " <>
        Enum.map_join(keys, " | ", &GroupsProfile.fmt(elem(counts[&1], 0)[mfa])) <> " |"
    )
  end

  IO.puts("\nmessages received per command (process kind, message kind), the 3 nodes summed")
  kinds = keys |> Enum.flat_map(&Map.keys(elem(counts[&1], 1))) |> Enum.uniq() |> Enum.sort()

  IO.puts(
    "| receiver | message | " <> Enum.map_join(keys, " | ", fn {s, l} -> "#{s} #{l}" end) <> " |"
  )

  IO.puts("| --- | --- | " <> Enum.map_join(keys, " | ", fn _ -> "---" end) <> " |")

  for {who, what} = kind <- kinds do
    IO.puts(
      "| #{who} | #{inspect(what)} | " <>
        Enum.map_join(keys, " | ", &GroupsProfile.fmt(Map.get(elem(counts[&1], 1), kind, 0))) <>
        " |"
    )
  end

  if System.get_env("GROUPS_PROFILE_EPROF") == "1" do
    for {s, log} = k <- keys do
      IO.puts("\n#{s} groups (#{log}):")
      GroupsProfile.eprof(sets[k], nodes, round_ms, 30)
    end
  end

  IO.puts("\n#{load.()}")
after
  LocalCluster.stop(peers)
  File.rm_rf(root)
end
