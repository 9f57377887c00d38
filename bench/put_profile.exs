# Put-path profile (not a speed bench: counts, no wall-clock ratio): what
# one Synod.Store.put/3 costs in figures the machine's load does not change,
# so two builds can be diffed on a busy machine (docs/coordination.md,
# "The put path against 47d4d8d").
#
#   MIX_ENV=test mix run bench/put_profile.exs [OPS] [--no-strace] [--top N] [--op put|lock]
#
# --op lock profiles Synod.Lock.lock/4 + unlock (Synod.Test.CoordBench.locks/3,
# an empty fun, ttl 5000) instead of the put: each "per put" below is then
# per lock + unlock.
#
# On 3 real :peer nodes (a 3-voter store, fsync on), client on a follower,
# OPS (default 2000) sequential puts (Synod.Test.CoordBench.puts/2), three
# passes after a warm-up:
#   1. reductions per put of every process on each node (the top ones by
#      name or initial call), the caller's, and each node's total; each
#      node's garbage collections and its CPU time (statistics(:runtime),
#      all its threads: less load-bound than wall clock, not free of it);
#   2. per-function profiles of the leader's Raft member, a follower's
#      member and the caller: calls per put (call_time breakpoints, counted
#      for that process only), sorted by calls, with the microseconds as a
#      hint only (they move with load); PUT_PROFILE_OUT=prefix writes each
#      whole profile to prefix.leader/.follower/.caller for a diff;
#   3. syscalls per put of the leader's beam, all threads (strace -f -c;
#      last, since a leader slowed by strace may lose its leadership).
# Runs unchanged on older commits: its helper module is sent to the peers
# as a binary and it uses only Synod.Test.CoordBench and Synod.Test.Coord.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster

{opts, args, _} =
  OptionParser.parse(System.argv(), switches: [strace: :boolean, top: :integer, op: :string])

ops =
  case args do
    [n] -> String.to_integer(n)
    [] -> 2000
  end

top = Keyword.get(opts, :top, 40)
op = String.to_atom(Keyword.get(opts, :op, "put"))
true = op in [:put, :lock]

{:module, remote, remote_bin, _} =
  defmodule PutProfile.Remote do
    @moduledoc false
    # Runs on the peers (loaded there as a binary).

    # %{pid => {label, reductions}} of every live process.
    def reductions do
      for pid <- Process.list() -- [self()],
          info = Process.info(pid, [:reductions, :registered_name, :dictionary, :initial_call]),
          info != nil,
          into: %{} do
        {pid, {label(info), info[:reductions]}}
      end
    end

    defp label(info) do
      case info[:registered_name] do
        [] ->
          case Keyword.get(info[:dictionary], :"$initial_call") do
            {m, f, a} -> "#{inspect(m)}.#{f}/#{a}"
            _ -> inspect(info[:initial_call])
          end

        name ->
          inspect(name)
      end
    end

    # `n` operations (`op`: :put or :lock) in this process; returns this
    # process's reductions for them.
    def puts(store, n, op \\ :put) do
      {:reductions, r0} = Process.info(self(), :reductions)
      run(op, store, n)
      {:reductions, r1} = Process.info(self(), :reductions)
      r1 - r0
    end

    # `n` operations in this process, profiled (profile_start/1): the rows of
    # profile_stop/2 for this process.
    def profiled_puts(store, n, op \\ :put) do
      tracer = profile_start(self())
      run(op, store, n)
      profile_stop(self(), tracer)
    end

    defp run(:put, store, n), do: Synod.Test.CoordBench.puts(store, n)
    defp run(:lock, store, n), do: Synod.Test.CoordBench.locks(store, "bench/lock", n)

    def os_pid, do: List.to_integer(:os.getpid())

    # Call-time breakpoints on every function (and modules loaded later),
    # counted for `pid` alone. The tracer must outlive this call (tracing
    # ends with it): a process that waits for `profile_stop/2`.
    def profile_start(pid) do
      tracer = spawn(fn -> receive do: (:stop -> :ok) end)
      :erlang.trace_pattern(:on_load, true, [:call_time])
      :erlang.trace_pattern({:_, :_, :_}, true, [:call_time])
      1 = :erlang.trace(pid, true, [:call, {:tracer, tracer}])
      tracer
    end

    # [{mfa, calls, microseconds}] for `pid`, and removes the breakpoints.
    def profile_stop(pid, tracer) do
      :erlang.trace(pid, false, [:call])

      rows =
        for {m, _} <- :code.all_loaded(),
            {f, a} <- functions(m),
            {:call_time, data} when is_list(data) <- [:erlang.trace_info({m, f, a}, :call_time)],
            {^pid, calls, s, us} <- data,
            calls > 0,
            do: {{m, f, a}, calls, s * 1_000_000 + us}

      :erlang.trace_pattern(:on_load, false, [:call_time])
      :erlang.trace_pattern({:_, :_, :_}, false, [:call_time])
      send(tracer, :stop)
      rows
    end

    defp functions(m) do
      m.module_info(:functions)
    rescue
      _ -> []
    end
  end

dir = Path.join(System.tmp_dir!(), "synod-put-profile-#{System.unique_integer([:positive])}")
peers = LocalCluster.start(3, prefix: "pp")
nodes = Enum.map(peers, &elem(&1, 1))
store = :put_profile

per = fn n -> Float.round(n / ops, 2) end

try do
  for node <- nodes,
      do:
        {:module, ^remote} =
          :erpc.call(node, :code, :load_binary, [remote, ~c"nofile", remote_bin])

  leader = Synod.Test.Coord.start_store(store, nodes, dir)
  [client | _] = nodes -- [leader]
  [other] = nodes -- [leader, client]
  roles = [{"leader", leader}, {"client", client}, {"other", other}]
  at = fn node, fun, args -> :erpc.call(node, remote, fun, args, 600_000) end
  member = fn node -> :erpc.call(node, Process, :whereis, [Synod.Raft.member_name(store)]) end

  at.(client, :puts, [store, 200, op])

  IO.puts(
    "3 voters on 127.0.0.1, client on a follower (#{client}); #{ops} sequential #{op}s per pass, per #{op}:"
  )

  # 1. reductions
  r0 =
    for {_, n} <- roles,
        into: %{},
        do:
          {n,
           {at.(n, :reductions, []), :erpc.call(n, :erlang, :statistics, [:exact_reductions]),
            :erpc.call(n, :erlang, :statistics, [:garbage_collection]),
            :erpc.call(n, :erlang, :statistics, [:runtime])}}

  caller = at.(client, :puts, [store, ops, op])

  r1 =
    for {_, n} <- roles,
        into: %{},
        do:
          {n,
           {at.(n, :reductions, []), :erpc.call(n, :erlang, :statistics, [:exact_reductions]),
            :erpc.call(n, :erlang, :statistics, [:garbage_collection]),
            :erpc.call(n, :erlang, :statistics, [:runtime])}}

  IO.puts("\n== reductions per put (caller process #{per.(caller)})")

  for {role, node} <- roles do
    {before, {t0, _}, {gcs0, words0, _}, {cpu0, _}} = r0[node]
    {after_, {t1, _}, {gcs1, words1, _}, {cpu1, _}} = r1[node]

    rows =
      for {pid, {label, r}} <- after_ do
        {_, r_0} = Map.get(before, pid, {label, 0})
        {label, r - r_0}
      end
      |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
      |> Enum.map(fn {label, rs} -> {label, Enum.sum(rs)} end)
      |> Enum.sort_by(&(-elem(&1, 1)))

    live = rows |> Enum.map(&elem(&1, 1)) |> Enum.sum()
    m = member.(node)
    {_, {_, mr1}} = {nil, Map.fetch!(after_, m)}
    {_, mr0} = Map.fetch!(before, m)

    {:total_heap_size, heap} = :erpc.call(node, Process, :info, [m, :total_heap_size])

    IO.puts(
      "#{role}: total #{per.(t1 - t0)}, live processes #{per.(live)}, member #{per.(mr1 - mr0)}; " <>
        "node GCs #{per.(gcs1 - gcs0)}, words reclaimed #{per.(words1 - words0)}; member heap #{heap} words; " <>
        "node CPU #{per.((cpu1 - cpu0) * 1000)} us"
    )

    for {label, r} <- Enum.take(rows, 8), r > 0, do: IO.puts("    #{per.(r)}  #{label}")
  end

  # 2. per-function profiles: the leader's member, a follower's member, the caller
  show = fn title, rows, file ->
    calls = rows |> Enum.map(&elem(&1, 1)) |> Enum.sum()
    us = rows |> Enum.map(&elem(&1, 2)) |> Enum.sum()

    IO.puts(
      "\n== #{title} profile: #{per.(calls)} calls per put (#{per.(us)} us per put under tracing); top #{top} by calls"
    )

    rows
    |> Enum.sort_by(&{-elem(&1, 1), elem(&1, 0)})
    |> Enum.take(top)
    |> Enum.each(fn {{m, f, a}, c, t} ->
      IO.puts(
        "    #{String.pad_leading(to_string(per.(c)), 7)}  #{String.pad_leading(to_string(per.(t)), 7)} us  #{inspect(m)}.#{f}/#{a}"
      )
    end)

    # The whole profile, for a diff between builds.
    if out = System.get_env("PUT_PROFILE_OUT") do
      File.write!(
        "#{out}.#{file}",
        rows
        |> Enum.sort()
        |> Enum.map(fn {{m, f, a}, c, _} -> "#{inspect(m)}.#{f}/#{a} #{per.(c)}\n" end)
      )
    end
  end

  for {title, node, file} <- [
        {"leader member", leader, "leader"},
        {"follower member", other, "follower"}
      ] do
    pid = member.(node)
    tracer = :erpc.call(node, remote, :profile_start, [pid])
    at.(client, :puts, [store, ops, op])
    show.(title, :erpc.call(node, remote, :profile_stop, [pid, tracer], 600_000), file)
  end

  show.("caller (on #{client})", at.(client, :profiled_puts, [store, ops, op]), "caller")
  # 3. syscalls (last: a leader slowed by strace may lose its leadership)
  if Keyword.get(opts, :strace, true) do
    os_pid = at.(leader, :os_pid, [])
    out = Path.join(dir, "strace.txt")

    port =
      Port.open({:spawn_executable, System.find_executable("strace")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: ["-f", "-c", "-o", out, "-p", Integer.to_string(os_pid)]
      ])

    {:os_pid, strace_pid} = Port.info(port, :os_pid)
    Process.sleep(2_000)
    at.(client, :puts, [store, ops, op])
    System.cmd("kill", ["-INT", Integer.to_string(strace_pid)])

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      30_000 -> raise "strace did not stop"
    end

    IO.puts("\n== leader beam syscalls per put (strace -f -c, all threads)")

    for line <- String.split(File.read!(out), "\n"),
        [_pct, _secs, _usecs, calls | rest] <- [String.split(line)],
        Regex.match?(~r/^\d+$/, calls),
        name = List.last(rest),
        name != "total" do
      {name, String.to_integer(calls)}
    end
    |> Enum.sort_by(&(-elem(&1, 1)))
    |> Enum.each(fn {name, calls} -> IO.puts("    #{per.(calls)}  #{name}") end)

    now = Synod.Test.Raft.wait_leader(store, nodes)

    if now != leader,
      do:
        IO.puts(
          "    (the leader changed during this pass, to #{now}: counts include an election)"
        )
  end
after
  LocalCluster.stop(peers)
  File.rm_rf(dir)
end
