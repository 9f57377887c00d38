# What one sequential store put costs on each VM, in measures that do not
# depend much on the machine's load (not a speed bench: no wall-clock rate,
# so no baseline ratio; compare two builds by running this script in each
# tree). docs/coordination.md, "Where main's put time went (session 28)".
#
#   MIX_ENV=test mix run bench/put_cost.exs [PUTS] [strace]
#
# 3 :peer nodes started with the schedulers' busy wait off (+sbwt none
# +sbwtdcpu none +sbwtdio none, so CPU time is work, not spinning), a
# 3-voter store (fsync on, the default log), client on a follower,
# PUTS (default 2000) sequential Synod.Store.put/3 of one key after a
# warm-up. Per put, on each VM (leader, client, other):
#   * CPU time of the whole OS process (:erlang.statistics(:runtime), us);
#   * process context switches (:erlang.statistics(:context_switches));
#   * reductions of every process, and the processes that ran (reductions
#     delta > 0) with their reductions per put, largest first;
#   * bytes in and out through ports (distribution included: :io);
#   * with `strace`: syscalls per put of each VM's OS process (strace -f -c,
#     a separate pass, since tracing slows the VM).
# Uses only APIs 47d4d8d has (Synod.Test.Coord.start_store/3,
# Synod.Test.CoordBench.puts/2), so it runs unchanged in both trees.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.Test.CoordBench

{puts, strace?} =
  case System.argv() do
    [n, "strace"] -> {String.to_integer(n), true}
    [n] -> {String.to_integer(n), false}
    [] -> {2000, false}
  end

defmodule PutCost do
  def start_peers(count) do
    Synod.LocalCluster.ensure_distributed()
    cookie = Atom.to_charlist(Node.get_cookie())

    for _ <- 1..count do
      {:ok, pid, node} =
        :peer.start(%{
          name: :peer.random_name(~c"pc"),
          host: ~c"127.0.0.1",
          longnames: true,
          args: [
            ~c"-setcookie",
            cookie,
            ~c"-kernel",
            ~c"prevent_overlapping_partitions",
            ~c"false",
            ~c"+sbwt",
            ~c"none",
            ~c"+sbwtdcpu",
            ~c"none",
            ~c"+sbwtdio",
            ~c"none"
          ]
        })

      :ok = :erpc.call(node, :code, :add_paths, [:code.get_path()])
      {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:synod])
      {pid, node}
    end
  end

  # Runs on the peer (a fun of a compiled module is not needed: only BIFs).
  # The VM's counters are read after the per-process pass before the run
  # (:before) and ahead of it after the run (:after), so the pass's own
  # erpc work falls outside the deltas.
  def snapshot(node, :before) do
    procs = procs(node)
    Map.put(counters(node), :procs, procs)
  end

  def snapshot(node, :after) do
    counters = counters(node)
    Map.put(counters, :procs, procs(node))
  end

  defp counters(node) do
    {runtime, _} = :erpc.call(node, :erlang, :statistics, [:runtime])
    {cs, _} = :erpc.call(node, :erlang, :statistics, [:context_switches])
    {{:input, inp}, {:output, out}} = :erpc.call(node, :erlang, :statistics, [:io])
    {red, _} = :erpc.call(node, :erlang, :statistics, [:reductions])
    %{runtime: runtime, cs: cs, in: inp, out: out, red: red, spawned: pid_number(node)}
  end

  # Pids are handed out in order: the number of a fresh process's pid counts
  # the processes spawned on the node (this pass's own erpc calls included:
  # 6 between a :before and an :after reading).
  defp pid_number(node) do
    pid = :erpc.call(node, :erlang, :spawn, [:erlang, :is_atom, [1]])
    [_, n, _] = pid |> :erlang.pid_to_list() |> to_string() |> String.split(".")
    String.to_integer(n)
  end

  defp procs(node) do
    for p <- :erpc.call(node, :erlang, :processes, []), into: %{} do
      {p, :erpc.call(node, :erlang, :process_info, [p, [:reductions, :registered_name]])}
    end
  end

  def name(node, p, info) do
    case info[:registered_name] do
      [] ->
        case :erpc.call(node, Process, :info, [p, :dictionary]) do
          {:dictionary, d} ->
            case d[:"$initial_call"] do
              {m, f, a} -> "#{inspect(p)} #{inspect(m)}.#{f}/#{a}"
              _ -> inspect(p)
            end

          _ ->
            inspect(p)
        end

      n ->
        inspect(n)
    end
  end
end

dir = Path.join(System.tmp_dir!(), "synod-put-cost-#{System.unique_integer([:positive])}")
peers = PutCost.start_peers(3)
nodes = Enum.map(peers, &elem(&1, 1))
store = :put_cost

try do
  leader = Synod.Test.Coord.start_store(store, nodes, dir)
  [client | _] = nodes -- [leader]
  [other] = nodes -- [leader, client]
  roles = [{"leader", leader}, {"client", client}, {"other", other}]
  run = fn n -> :erpc.call(client, CoordBench, :puts, [store, n], 600_000) end
  run.(300)

  before = for {_, n} <- roles, into: %{}, do: {n, PutCost.snapshot(n, :before)}
  run.(puts)
  after_ = for {_, n} <- roles, into: %{}, do: {n, PutCost.snapshot(n, :after)}

  IO.puts("#{puts} sequential puts, client on a follower, busy wait off; per put:")
  per = fn d -> Float.round(d / puts, 2) end

  for {role, node} <- roles do
    b = before[node]
    a = after_[node]

    IO.puts(
      "\n#{role}: CPU #{per.((a.runtime - b.runtime) * 1000)} us, " <>
        "context switches #{per.(a.cs - b.cs)}, reductions #{per.(a.red - b.red)}, " <>
        "bytes in #{per.(a.in - b.in)} out #{per.(a.out - b.out)}, " <>
        "processes spawned #{per.(a.spawned - b.spawned - 6)}"
    )

    ran =
      for {p, ai} <- a.procs,
          is_list(ai),
          bi = b.procs[p],
          is_list(bi),
          d = ai[:reductions] - bi[:reductions],
          d > 0,
          do: {d, PutCost.name(node, p, ai)}

    IO.puts("  processes that ran: #{length(ran)}")

    for {d, name} <- ran |> Enum.sort(:desc) |> Enum.take(12) do
      IO.puts("    #{String.pad_leading(Float.to_string(per.(d)), 8)}  #{name}")
    end
  end

  if strace? do
    IO.puts("\nstrace -f -c, a second pass of #{puts} puts:")

    traces =
      for {role, node} <- roles do
        os = :erpc.call(node, :os, :getpid, [])
        out = Path.join(dir, "strace-#{role}")
        port = Port.open({:spawn, "strace -f -c -o #{out} -p #{os}"}, [:binary])
        {:os_pid, strace_pid} = Port.info(port, :os_pid)
        {role, out, port, strace_pid}
      end

    Process.sleep(1500)
    run.(puts)

    for {_, _, _, strace_pid} <- traces, do: System.cmd("kill", ["-INT", "#{strace_pid}"])
    Process.sleep(1500)

    for {role, out, _port, _} <- traces do
      IO.puts("\n#{role}:")

      for line <- out |> File.read!() |> String.split("\n"),
          [_, _, _, calls | rest] <- [String.split(line)],
          match?({_, ""}, Integer.parse(calls)),
          rest != [] do
        {c, ""} = Integer.parse(calls)
        sys = List.last(rest)
        if c >= puts / 10, do: IO.puts("  #{String.pad_trailing(sys, 16)} #{per.(c)}")
      end
    end
  end
after
  Synod.LocalCluster.stop(peers)
  File.rm_rf(dir)
end
