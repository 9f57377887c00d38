defmodule Synod.Test.HubBench do
  @moduledoc false
  # Code the hub benchmarks (bench/hub_bench.exs, hub_cpu.exs,
  # hub_reductions.exs) run on peers, and the setup they share.

  alias Synod.Test.HubWorker

  @doc "`[n, rounds]` from the bench's `[N] [ROUNDS]` arguments (100,000 and 3 by default)."
  def args do
    case System.argv() do
      [n, r] -> [String.to_integer(n), String.to_integer(r)]
      [n] -> [String.to_integer(n), 3]
      [] -> [100_000, 3]
    end
  end

  @doc "Waits (60 s at most) until every node's registry of hub `:bench` holds `count` children."
  def await_children(nodes, count) do
    Synod.Test.Wait.until(
      fn ->
        Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :children, [:bench, :global])) == count))
      end,
      60_000
    )
  end

  def ids(range), do: Enum.map(range, &"child-#{&1}")

  def specs(range),
    do: Enum.map(range, &%{id: "child-#{&1}", start: {HubWorker, :start_link, ["child-#{&1}"]}})

  # ── baseline: DynamicSupervisor + :erpc, no registry ──

  def baseline_sup do
    {:ok, pid} =
      DynamicSupervisor.start_link(name: :bench_base, strategy: :one_for_one, max_restarts: 1_000)

    Process.unlink(pid)
    :ok
  end

  def baseline_start(range) do
    for i <- range do
      id = "child-#{i}"

      {:ok, _} =
        DynamicSupervisor.start_child(:bench_base, %{
          id: id,
          start: {HubWorker, :start_link, [id]}
        })
    end

    :ok
  end

  def baseline_stop do
    for {_, pid, _, _} <- DynamicSupervisor.which_children(:bench_base),
        do: :ok = DynamicSupervisor.terminate_child(:bench_base, pid)

    :ok
  end

  # ── Synod ──

  def hub(opts) do
    {:ok, pid} = Synod.start_link(opts)
    Process.unlink(pid)
    :ok
  end

  @doc "Starts `n` children through the hub from this node; {microseconds, status, started, errors}."
  def synod_start(hub, n) do
    specs = specs(1..n)
    :erlang.garbage_collect()

    {us, {status, result}} =
      :timer.tc(fn -> Synod.start_children(hub, specs, timeout: 300_000) end)

    {us, status, length(result.started), length(result.errors)}
  end

  def synod_stop(hub, n) do
    ids = ids(1..n)
    {us, {status, result}} = :timer.tc(fn -> Synod.stop_children(hub, ids, timeout: 300_000) end)
    {us, status, length(result.stopped), length(result.errors)}
  end

  @doc "Registry bytes per child on this node (both hub tables)."
  def registry_bytes(hub, n) do
    {registry, meta} = :persistent_term.get({Synod.Hub, hub})
    words = :ets.info(registry, :memory) + :ets.info(meta, :memory)
    words * :erlang.system_info(:wordsize) / n
  end

  @doc "Process memory of the hub's coordinator and of its children's supervisor."
  def coordinator_bytes(hub) do
    {:memory, coordinator} = Process.info(Process.whereis(hub), :memory)
    {:memory, children} = Process.info(Process.whereis(:"#{hub}.children"), :memory)
    {coordinator, children}
  end

  @doc """
  Waits (from a process spawned now) until this node runs `expected`
  children of `hub`, then sends `{:redistributed, node, os_time_us}` to
  `target`. Counts starts from hub events, so it costs nothing while idle.
  """
  def watch_until(hub, expected, target) do
    parent = self()

    spawn(fn ->
      :ok = Synod.subscribe(hub, [:children_started])
      send(parent, :watching)
      watch(hub, expected, target)
    end)

    receive do
      :watching -> :ok
    end
  end

  defp watch(hub, expected, target) do
    if local_count(hub) >= expected do
      send(target, {:redistributed, node(), :os.system_time(:microsecond)})
    else
      receive do
        {:synod, ^hub, :children_started, {node, _}} when node == node() ->
          watch(hub, expected, target)

        {:synod, ^hub, :children_started, _} ->
          watch(hub, expected, target)
      end
    end
  end

  defp local_count(hub), do: DynamicSupervisor.count_children(:"#{hub}.children").active

  def owned_counts(members, n) do
    ring = Synod.Ring.new(members)
    ring |> Synod.Ring.lookup_many(ids(1..n)) |> Enum.frequencies()
  end
end
