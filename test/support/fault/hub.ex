defmodule Synod.Fault.Hub do
  @moduledoc false
  # Workload: a hub on every peer (default options: replication factor 1,
  # partitions diverge and heal). Each client starts children with ids no
  # one else uses and stops some of its own, through Synod.start_children/3
  # and Synod.stop_children/3. After the heal (a killed node's hub is started
  # again) the controller waits for the placement to settle and records what
  # really runs where (the children themselves, not the registry). Checked,
  # child by child, after healing:
  #
  #   * no child runs twice, and a running child runs on its owner;
  #   * a child whose last operation was a start answered {:ok, _} runs;
  #   * a child whose last operation was a stop answered {:ok, _} (or that
  #     never started) does not run — a stop undone by a heal shows here.
  #
  # A child with an operation of unknown outcome may run or not (once).

  alias Synod.Fault.{Collector, Register}
  alias Synod.StartResult
  alias Synod.Test.{HubCase, RemoteHub}

  @hub :fault_hub
  @call_timeout 2_000

  def setup(cluster, _opts) do
    HubCase.start_hubs(cluster.nodes, name: @hub)
    %{hub: @hub}
  end

  def init_client(_ctx, _process), do: %{n: 0, mine: []}

  def stop_client(_ctx, _store, _collector, _process, _st), do: :ok

  def op(ctx, _store, collector, process, st) do
    st = %{st | n: st.n + 1}

    if st.mine == [] or :rand.uniform(10) <= 7 do
      id = "h#{:erlang.phash2(process)}-#{st.n}"
      spec = RemoteHub.spec(id)

      Collector.run(collector, process, :start, id, fn ->
        case Synod.start_children(ctx.hub, [spec], timeout: @call_timeout) do
          {:ok, %StartResult{errors: []}} ->
            {:ok, nil}

          {:error, reason} when reason == :partitioned or elem(reason, 0) == :unknown_hub ->
            {:fail, reason}

          other ->
            {:info, other}
        end
      end)

      %{st | mine: [id | st.mine]}
    else
      id = Enum.random(st.mine)

      Collector.run(collector, process, :stop, id, fn ->
        case Synod.stop_children(ctx.hub, [id], timeout: @call_timeout) do
          {:ok, _} -> {:ok, nil}
          other -> {:info, other}
        end
      end)

      %{st | mine: List.delete(st.mine, id)}
    end
  end

  # Every node runs its hub again, then the placement is given time to settle
  # (two equal readings in a row, bounded) and recorded.
  def final(cluster, ctx, collector) do
    for n <- cluster.nodes,
        not hub_running?(n, ctx.hub),
        do: {:ok, _} = :erpc.call(n, RemoteHub, :start_hub, [[name: ctx.hub]])

    HubCase.await_members(cluster.nodes, ctx.hub, cluster.nodes, 30_000)
    running = settle(cluster.nodes, ctx.hub, nil, 60)

    owners =
      Map.new(
        Map.keys(running),
        &{&1, :erpc.call(hd(cluster.nodes), Synod, :owners, [ctx.hub, &1])}
      )

    Collector.note(collector, :controller, {:hub_after_heal, running, owners})
  end

  defp hub_running?(node, hub) do
    is_list(:erpc.call(node, Synod, :members, [hub], 5_000))
  catch
    _, _ -> false
  end

  defp settle(_nodes, _hub, last, 0), do: last

  defp settle(nodes, hub, last, tries) do
    now = HubCase.running(nodes, hub)

    if now == last do
      now
    else
      Process.sleep(500)
      settle(nodes, hub, now, tries - 1)
    end
  end

  def check(ops, events, _ctx) do
    counts = Register.count(ops)
    [{running, owners}] = for {_t, :controller, {:hub_after_heal, r, o}} <- events, do: {r, o}
    by_id = Enum.group_by(ops, & &1.arg)

    violation =
      Enum.find_value(running, fn {id, nodes} -> placement_violation(id, nodes, owners[id]) end) ||
        Enum.find_value(by_id, fn {id, id_ops} ->
          outcome_violation(id, id_ops, Map.get(running, id, []))
        end)

    if violation, do: {:error, counts, violation}, else: {:ok, counts}
  end

  defp placement_violation(id, nodes, owners) do
    cond do
      length(nodes) > 1 -> %{child: id, runs_on: nodes}
      nodes -- owners != [] -> %{child: id, runs_on: nodes, owners: owners}
      true -> nil
    end
  end

  defp outcome_violation(id, ops, nodes) do
    ops = Enum.sort_by(ops, & &1.invoke)
    last_ok = ops |> Enum.filter(&(&1.type == :ok)) |> List.last()
    unknown? = Enum.any?(ops, &(&1.type == :info))

    case {unknown?, last_ok && last_ok.f, nodes} do
      {true, _, _} -> nil
      {false, :start, []} -> %{child: id, started_ok_but_not_running: ops}
      {false, :start, _} -> nil
      {false, _stopped_or_never_started, []} -> nil
      {false, _, nodes} -> %{child: id, stopped_or_never_started_but_runs_on: nodes, ops: ops}
    end
  end
end
