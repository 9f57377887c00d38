defmodule Synod.Fault.Runner do
  @moduledoc false
  # One fault-injection case: a workload under a nemesis, with a seed.
  #
  # The controller (this VM) starts the peers and their store
  # (Synod.Test.Cluster), the collector, a nemesis and clients on every peer.
  # Clients run the workload's operations through the collector until the
  # time is up; a client whose node was killed is started again (as a new
  # process) once its node is back. Then every fault is healed, the workload
  # gets a final phase (e.g. draining a queue), the members are given 20 s
  # to converge (every member running, at one applied index: a member that
  # did not come back or catch up is a violation), and the history is
  # checked and written to disk:
  #
  #   <out>/history.txt   one line per operation and event, in time order
  #   <out>/history.etf   {ops, events} as term_to_binary
  #   <out>/summary.txt   the summary line
  #
  # run/1 returns {verdict, summary_line}; verdict is :ok, :violation or
  # :unknown (the checker ran out of budget, or the run itself failed).

  alias Synod.Fault.{Collector, Nemesis}
  alias Synod.Test.Cluster

  @workloads %{
    register: Synod.Fault.Register,
    lock: Synod.Fault.Locks,
    queue: Synod.Fault.Queues,
    watch: Synod.Fault.Watches,
    tasks: Synod.Fault.TaskStore,
    hub: Synod.Fault.Hub,
    election: Synod.Fault.Elections
  }
  @clients_per_node 2

  def workloads, do: Map.keys(@workloads)

  @doc """
  Options: :workload and :nemesis (atoms), :seed (integer), :nodes (3 or
  5), :time (ms of operations), :out (directory for the history and data).
  """
  def run(opts) do
    name = Keyword.fetch!(opts, :workload)
    workload = Map.fetch!(@workloads, name)
    nemesis = Keyword.fetch!(opts, :nemesis)
    unless nemesis in Nemesis.all(), do: raise(ArgumentError, "unknown nemesis #{nemesis}")
    seed = Keyword.get(opts, :seed, 1)
    count = Keyword.get(opts, :nodes, 3)
    time = Keyword.get(opts, :time, 12_000)
    out = Keyword.get(opts, :out, Path.join(["_build", "fault", "#{name}-#{nemesis}-#{seed}"]))
    File.rm_rf!(out)
    File.mkdir_p!(out)
    data_root = Path.join(out, "data")
    :rand.seed(:exsss, {seed, 1, 1})

    disk = if nemesis == :disk_full, do: :pending
    store = :"fault_#{System.unique_integer([:positive])}"

    before_store = fn nodes ->
      if disk, do: Process.put(:fault_disk, Nemesis.disk_setup(data_root, nodes))
    end

    cluster = Cluster.start(count, data_root: data_root, store: store, before_store: before_store)

    collector = :"fault_collector_#{System.unique_integer([:positive])}"
    {:ok, _} = Collector.start(collector)
    collector_ref = {collector, node()}

    try do
      ctx = workload.setup(cluster, opts)
      until = now() + time
      nem = Nemesis.start(nemesis, cluster, collector_ref, until, seed, self())

      slots =
        for node <- cluster.nodes, i <- 1..@clients_per_node, into: %{} do
          {{node, i},
           spawn_client(workload, ctx, cluster, collector_ref, {node, i, 0}, until, seed)}
        end

      cluster = supervise_clients(slots, workload, ctx, cluster, collector_ref, until, seed, nem)
      # restarted peers have new pids: the clean-up below must stop those
      Process.put(:fault_cluster, cluster)
      Collector.nemesis(collector_ref, :healed)
      # a group that cannot agree on a leader after healing is the violation:
      # no final phase, no workload check
      converged = converged?(cluster)
      if converged == true, do: workload.final(cluster, ctx, collector_ref)
      {ops, events} = Collector.history(collector_ref)

      verdict =
        if converged == true,
          do: workload.check(ops, events, ctx),
          else: {:ok, Synod.Fault.Register.count(ops)}

      write_history(out, ops, events)
      summary(name, nemesis, seed, count, verdict, converged, out)
    after
      GenServer.stop(collector)
      Cluster.stop(Process.delete(:fault_cluster) || cluster)
      if dir = Process.delete(:fault_disk), do: Nemesis.disk_teardown(dir)
    end
  end

  # Waits until the time is up and the nemesis has healed, starting clients
  # again whose node came back.
  defp supervise_clients(slots, workload, ctx, cluster, collector, until, seed, nem) do
    receive do
      {:nemesis_done, ^nem, cluster} ->
        wait_clients(slots)
        cluster

      {:DOWN, ref, :process, _, _} ->
        case Enum.find(slots, fn {_slot, {_pid, r, _}} -> r == ref end) do
          {slot, {_, _, incarnation}} ->
            Process.send_after(self(), {:respawn, slot, incarnation + 1}, 500)
            slots = Map.put(slots, slot, {nil, nil, incarnation})
            supervise_clients(slots, workload, ctx, cluster, collector, until, seed, nem)

          nil ->
            supervise_clients(slots, workload, ctx, cluster, collector, until, seed, nem)
        end

      {:respawn, {node, i} = slot, incarnation} ->
        slots =
          cond do
            now() >= until ->
              slots

            node in Node.list() ->
              client =
                spawn_client(
                  workload,
                  ctx,
                  cluster,
                  collector,
                  {node, i, incarnation},
                  until,
                  seed
                )

              Map.put(slots, slot, client)

            true ->
              Process.send_after(self(), {:respawn, slot, incarnation}, 500)
              slots
          end

        supervise_clients(slots, workload, ctx, cluster, collector, until, seed, nem)
    end
  end

  defp wait_clients(slots) do
    for {_slot, {pid, ref, _}} <- slots, pid != nil do
      receive do
        {:DOWN, ^ref, :process, _, _} -> :ok
      after
        30_000 -> Process.exit(pid, :kill)
      end
    end
  end

  defp spawn_client(
         workload,
         ctx,
         cluster,
         collector,
         {node, _i, incarnation} = process,
         until,
         seed
       ) do
    remaining = until - now()

    args = [
      workload,
      ctx,
      cluster.store,
      collector,
      process,
      remaining,
      {seed, :erlang.phash2(process), 17}
    ]

    {pid, ref} = Node.spawn_monitor(node, Synod.Fault.Client, :run, args)
    {pid, ref, incarnation}
  end

  # Every member running, naming one leader, at one applied index (bounded
  # wait): true, or what each node reports.
  defp converged?(cluster) do
    views = fn ->
      for n <- cluster.nodes do
        try do
          s = :erpc.call(n, Synod.Raft, :status, [cluster.store], 2_000)
          {n, Cluster.leader_seen_by(cluster, n), s.applied}
        catch
          kind, why -> {n, {kind, why}}
        end
      end
    end

    agreed? = fn v ->
      match?([{_, l, _} | _] when l != nil, v) and
        length(Enum.uniq(for {_, l, a} <- v, do: {l, a})) == 1
    end

    try do
      Synod.Test.Wait.until(fn -> agreed?.(views.()) end, 30_000)
      true
    rescue
      ExUnit.AssertionError -> views.()
    end
  end

  defp write_history(out, ops, events) do
    File.write!(Path.join(out, "history.etf"), :erlang.term_to_binary({ops, events}))

    lines =
      Enum.map(ops, &{&1.invoke, :op, &1}) ++
        Enum.map(events, fn {t, p, e} -> {t, :event, {p, e}} end)

    text =
      lines
      |> Enum.sort_by(&elem(&1, 0))
      |> Enum.map(fn
        {t, :op, op} ->
          "#{t} #{inspect(op.process)} #{inspect(op.f)} #{inspect(op.arg)} -> #{op.type} #{inspect(op.value)} (done #{inspect(op.complete)})\n"

        {t, :event, {p, e}} ->
          "#{t} #{inspect(p)} #{inspect(e)}\n"
      end)

    File.write!(Path.join(out, "history.txt"), text)
  end

  defp summary(workload, nemesis, seed, count, verdict, converged, out) do
    {status, counts, detail} =
      case verdict do
        {:ok, counts} when converged != true ->
          {:violation, counts, %{members_did_not_converge: converged}}

        {:ok, counts} ->
          {:ok, counts, nil}

        {:error, counts, evidence} ->
          {:violation, counts, evidence}

        {:unknown, counts, why} ->
          {:unknown, counts, why}
      end

    counts = Enum.map_join(counts, " ", fn {k, v} -> "#{k}=#{v}" end)

    line =
      "fault #{workload} #{nemesis} seed=#{seed} nodes=#{count} #{counts} verdict=#{status} " <>
        "converged=#{converged == true} history=#{out}/history.txt" <>
        if(detail, do: " first=#{inspect(detail, limit: 20, printable_limit: 200)}", else: "")

    File.write!(Path.join(out, "summary.txt"), line <> "\n")
    {status, line}
  end

  defp now, do: System.monotonic_time(:millisecond)
end

defmodule Synod.Fault.Client do
  @moduledoc false
  # A client on a peer: runs a workload's operations until its time is up.

  def run(workload, ctx, store, collector, process, remaining, seed) do
    :rand.seed(:exsss, seed)
    until = System.monotonic_time(:millisecond) + remaining
    loop(workload, ctx, store, collector, process, until, workload.init_client(ctx, process))
  end

  defp loop(workload, ctx, store, collector, process, until, st) do
    if System.monotonic_time(:millisecond) < until do
      st = workload.op(ctx, store, collector, process, st)
      loop(workload, ctx, store, collector, process, until, st)
    else
      workload.stop_client(ctx, store, collector, process, st)
    end
  end
end
