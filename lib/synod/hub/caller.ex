defmodule Synod.Hub.Caller do
  @moduledoc false
  # The caller's side of every request (what `Synod` delegates to): checks,
  # places, sends one batch per target node, and collects the answers with
  # Synod.Hub.Results. Runs in the calling process, never in a coordinator.
  #
  # A caller sees the hub through a *view*: on a member node, the node's
  # own tables (no message at all); on a node that runs no member (a client
  # node), one member — its *relay* — asked for the ring and for what its
  # registry holds, as the C node does. Answers for a caller always travel
  # through the relay's coordinator (a member's own node for members), so
  # they arrive after the relay has applied the registry change: when a
  # request returns, lookups through the same relay see it.

  alias Synod.{Dispatcher, Handle, Ring}
  alias Synod.Hub.{Options, Placement, Registry, Results, Spec}

  @call_timeout 5_000

  # ── views ────────────────────────────────────────────────────────────────

  @doc "The hub as this node sees it: `{:ok, view}` or `{:error, {:unknown_hub, hub}}`."
  @spec view(atom()) :: {:ok, map()} | {:error, {:unknown_hub, atom()}}
  def view(hub) do
    case tables(hub) do
      {:ok, {registry, meta}} ->
        {:ok,
         %{
           hub: hub,
           relay: node(),
           registry: registry,
           ring: meta_get(meta, :ring),
           cfg: meta_get(meta, :config),
           partitioned: meta_get(meta, :partitioned)
         }}

      {:error, _} = error ->
        client_view(hub, error)
    end
  end

  @doc "The tables of the hub's member on this node."
  @spec tables(atom()) :: {:ok, {:ets.tid(), :ets.tid()}} | {:error, {:unknown_hub, atom()}}
  def tables(hub) do
    case :persistent_term.get({Synod.Hub, hub}, nil) do
      {_registry, meta} = tables ->
        if :ets.info(meta, :id) == :undefined,
          do: {:error, {:unknown_hub, hub}},
          else: {:ok, tables}

      nil ->
        {:error, {:unknown_hub, hub}}
    end
  end

  @doc "`tables/1`, raising ArgumentError for an unknown hub."
  @spec tables!(atom()) :: {:ets.tid(), :ets.tid()}
  def tables!(hub) do
    case tables(hub) do
      {:ok, tables} -> tables
      {:error, _} -> raise ArgumentError, unknown(hub)
    end
  end

  @doc "`view/1`, raising ArgumentError for an unknown hub."
  @spec view!(atom()) :: map()
  def view!(hub) do
    case view(hub) do
      {:ok, view} -> view
      {:error, _} -> raise ArgumentError, unknown(hub)
    end
  end

  defp unknown(hub),
    do: "unknown hub #{inspect(hub)}: no hub of that name runs on #{node()} or a connected node"

  @doc "A value of the hub's meta table (`:config`, `:ring`, `:members`, `:partitioned`)."
  @spec meta_get(:ets.tid(), atom()) :: term()
  def meta_get(meta, key), do: :ets.lookup_element(meta, key, 2)

  # A client node: the first connected node whose coordinator answers (the
  # last one that did is tried first). Its ring and configuration are what
  # the request is placed with; a stale ring only costs a move afterwards.
  defp client_view(hub, error) do
    last = :persistent_term.get({__MODULE__, hub}, nil)
    candidates = if last in Node.list(), do: [last | Node.list() -- [last]], else: Node.list()

    Enum.find_value(candidates, error, fn node ->
      with {:ok, members, vnodes, seed, rf} <- ask(hub, node, :ring_info),
           {:ok, {^rf, model, _, _, strategy}} <- ask(hub, node, :config) do
        if last != node, do: :persistent_term.put({__MODULE__, hub}, node)

        {:ok,
         %{
           hub: hub,
           relay: node,
           registry: nil,
           ring: Ring.new(members, vnodes: vnodes, seed: seed),
           cfg: %{replication_factor: rf, replication_model: model, partition_strategy: strategy},
           partitioned: false
         }}
      else
        _ -> nil
      end
    end)
  end

  defp ask(hub, node, request) do
    GenServer.call({hub, node}, request, @call_timeout)
  catch
    :exit, _ -> :error
  end

  # `[{id, [pid]}]` for the ids the view's registry holds.
  defp locate(%{registry: nil} = view, ids) do
    case ask(view.hub, view.relay, {:synod_locate, ids}) do
      {:ok, found} -> found
      _ -> []
    end
  end

  defp locate(%{registry: registry}, ids) do
    Synod.Hub.Table.locate(registry, ids)
  end

  # ── start and stop ───────────────────────────────────────────────────────

  @doc "See `Synod.start_children/3`."
  @spec start_children(atom(), [term()], keyword()) :: {:ok | :error, term()}
  def start_children(hub, specs, opts) do
    opts = Options.start!(opts)

    # The children and their ids are kept in reverse order until grouped
    # (each list built once, none reversed: a 100k start's caller spends
    # much of its time building lists and collecting them).
    with {:ok, view} <- view(hub),
         :ok <- check_partition(view),
         {:ok, children_rev, ids_rev} <- normalize(specs),
         :ok <- check_duplicates_rev(ids_rev),
         :ok <- check_existing_rev(opts.check_existing, view, ids_rev) do
      %{replication_factor: rf, replication_model: model} = view.cfg
      # One incarnation for the request: every replica carries the same.
      slot = Registry.slot(opts.metadata, System.os_time(:microsecond))
      ids = :lists.reverse(ids_rev)

      {groups, expected} =
        case rf do
          1 ->
            Placement.group_rev(view.ring, children_rev, ids_rev, slot)

          _ ->
            children = :lists.reverse(children_rev)
            groups = Placement.group(view.ring, rf, model, children, slot)

            {groups,
             Map.new(groups, fn {node, es} -> {node, for({id, _, _, _} <- es, do: id)} end)}
        end

      handle =
        dispatch(view, :start, expected, opts, ids, fn ref ->
          Dispatcher.children_start(
            hub,
            for(
              {node, entries} <- groups,
              do: {node, {ref, [self()], entries, [{:answers, :pids} | relay(view)]}}
            )
          )
        end)

      if opts.await, do: await(handle), else: {:ok, handle}
    end
  end

  @doc "See `Synod.stop_children/3`."
  @spec stop_children(atom(), [term()], keyword()) :: {:ok | :error, term()}
  def stop_children(hub, child_ids, opts) do
    opts = Options.stop!(opts)

    with {:ok, view} <- view(hub),
         :ok <- check_partition(view) do
      handle = dispatch_stop(view, uniq(child_ids), opts)
      if opts.await, do: await(handle), else: {:ok, handle}
    end
  end

  # Usually there are no duplicates: one map built in C says so.
  defp uniq(ids) when is_list(ids) do
    if map_size(Map.from_keys(ids, true)) == length(ids), do: ids, else: Enum.uniq(ids)
  end

  defp uniq(ids), do: Enum.uniq(ids)

  @doc "See `Synod.await/1`."
  @spec await(Handle.t()) :: {:ok | :error, Synod.StartResult.t() | Synod.StopResult.t()}
  def await(%Handle{owner: owner} = handle) do
    if owner != self(),
      do: raise(ArgumentError, "a Synod.Handle can only be awaited by the process that made it")

    collect(handle)
  end

  # Members pass answers for callers on their own node inside the registry
  # change; a client names its relay, which does the same for it.
  defp relay(%{registry: nil, relay: relay}), do: [relay: relay]
  defp relay(_member), do: []

  defp check_partition(%{partitioned: true}), do: {:error, :partitioned}
  defp check_partition(_view), do: :ok

  defp normalize(specs) do
    case Spec.normalize_all_rev(specs) do
      {:ok, children_rev, ids_rev} -> {:ok, children_rev, ids_rev}
      {:error, bad} -> {:error, {:invalid_children, bad}}
    end
  end

  # (usually there are none: one map built in C says so; the duplicates,
  # when there are, in order)
  defp check_duplicates_rev(ids_rev) do
    if map_size(Map.from_keys(ids_rev, true)) == length(ids_rev) do
      :ok
    else
      {:error, {:duplicate_ids, Spec.duplicates(:lists.reverse(ids_rev))}}
    end
  end

  defp check_existing_rev(false, _view, _ids_rev), do: :ok

  defp check_existing_rev(true, %{registry: nil} = view, ids_rev) do
    case locate(view, :lists.reverse(ids_rev)) do
      [] -> :ok
      found -> {:error, {:already_started, Enum.map(found, &elem(&1, 0))}}
    end
  end

  defp check_existing_rev(true, %{registry: registry}, ids_rev) do
    case existing(ids_rev, registry, []) do
      [] -> :ok
      existing -> {:error, {:already_started, existing}}
    end
  end

  # The ids with a row, in the children's order, from the ids in reverse
  # (one clause per id, no function called on each, nothing reversed).
  defp existing([id | ids], registry, found) do
    if :ets.member(registry, id),
      do: existing(ids, registry, [id | found]),
      else: existing(ids, registry, found)
  end

  defp existing([], _registry, found), do: found

  defp dispatch_stop(view, ids, opts) do
    rf = view.cfg.replication_factor

    # one pass over the ids: the copies the registry knows (a member's
    # table read in the same pass; a client's relay asked once)
    copies =
      case view do
        %{registry: nil} -> {:map, Map.new(locate(view, ids))}
        %{registry: registry} -> {:table, registry}
      end

    # Ask every node the registry says runs a copy, and the owners too in
    # case the registry has not heard of a start yet. With one owner per
    # id, the ring's answer is taken as it is (no list per id).
    targets =
      case rf do
        1 -> stop_targets_one(ids, Placement.owner_many(view.ring, ids), copies, %{})
        _ -> stop_targets(ids, Placement.owners_many(view.ring, rf, ids), copies, %{})
      end

    requests = Map.new(targets, fn {node, ids} -> {node, :lists.reverse(ids)} end)

    dispatch(view, :stop, requests, Map.put(opts, :on_failure, :continue), ids, fn ref ->
      Dispatcher.children_stop(
        view.hub,
        for(
          {node, ids} <- relay_first(requests, view.relay),
          do: {node, {ref, [self()], ids, [{:answers, :pids} | relay(view)]}}
        )
      )
    end)
  end

  @doc """
  A stop's per-node requests `%{node => batch}` as a list, `relay`'s first
  (this node's on a member): its coordinator has the most to do (its own
  batch, then every other node's change before it passes their answers
  on), so it starts first, while this process encodes the others' batches.
  Its stop is then also stamped before the others', so their tombstones
  come to it above every stamp it has and are put whole
  (`Tombstones.record_ids/7`). Not for starts: there the peers' batches
  are the longer part, and sending this node's first delays them
  (docs/hub.md, "the stop, fourth round").
  """
  @spec relay_first(%{node() => term()}, node()) :: [{node(), term()}]
  def relay_first(requests, relay) do
    case Map.pop(requests, relay) do
      {nil, _} -> Map.to_list(requests)
      {batch, rest} -> [{relay, batch} | Map.to_list(rest)]
    end
  end

  # `%{node => ids (reversed)}`: each id under every node the registry
  # says runs a copy and every owner.
  defp stop_targets([id | ids], [owners | rest], copies, acc) do
    nodes =
      case copies(copies, id) do
        [] ->
          owners

        pids ->
          runs = for pid <- pids, do: node(pid)
          if runs == owners, do: owners, else: Enum.uniq(runs ++ owners)
      end

    stop_targets(ids, rest, copies, add_id(nodes, id, acc))
  end

  defp stop_targets([], [], _copies, acc), do: acc

  # `stop_targets/4` with one owner per id (`owners`: a node per id): the
  # usual id's one copy runs on its owner, which is then its only target.
  defp stop_targets_one([id | ids], [owner | rest], copies, acc) do
    acc =
      case copies(copies, id) do
        [pid] when node(pid) == owner ->
          Placement.prepend(acc, owner, id)

        [] ->
          Placement.prepend(acc, owner, id)

        pids ->
          runs = for pid <- pids, do: node(pid)
          add_id(Enum.uniq(runs ++ [owner]), id, acc)
      end

    stop_targets_one(ids, rest, copies, acc)
  end

  defp stop_targets_one([], [], _copies, acc), do: acc

  defp copies({:table, registry}, id), do: Synod.Hub.Table.pids(registry, id)

  defp copies({:map, map}, id) do
    case map do
      %{^id => pids} -> pids
      _ -> []
    end
  end

  defp add_id([node | nodes], id, acc), do: add_id(nodes, id, Placement.prepend(acc, node, id))

  defp add_id([], _id, acc), do: acc

  # `expected` maps each target node to the child ids it must answer for.
  defp dispatch(view, kind, expected, opts, ids, send_fun) do
    hub = view.hub
    ref = make_ref()
    # Monitors first, so a node that is already gone answers with :DOWN. A
    # client's relay too: every answer comes through it.
    watched = Enum.uniq([view.relay | Map.keys(expected)])
    monitors = Map.new(watched, &{Process.monitor({hub, &1}), &1})
    send_fun.(ref)

    deadline = if opts.timeout == :infinity, do: :infinity, else: now() + opts.timeout

    %Handle{
      hub: hub,
      ref: ref,
      kind: kind,
      results: Results.new(kind, expected),
      monitors: monitors,
      deadline: deadline,
      ids: ids,
      on_failure: opts.on_failure,
      owner: self(),
      relay: view.relay
    }
  end

  defp now, do: System.monotonic_time(:millisecond)

  defp remaining(:infinity), do: :infinity
  defp remaining(deadline), do: max(deadline - now(), 0)

  defp collect(%Handle{ref: ref, results: results} = h) do
    if Results.done?(results) do
      finish(h)
    else
      receive do
        {:synod_results, ^ref, node, answers} ->
          collect(%{h | results: Results.record(results, node, answers)})

        {^ref, id, answer, node} ->
          collect(%{h | results: Results.record(results, node, [{id, answer}])})

        {:DOWN, mref, :process, _, _reason} when is_map_key(h.monitors, mref) ->
          node = Map.fetch!(h.monitors, mref)
          results = h |> settle_with_relay(node) |> Results.fail_node(node, {:nodedown, node})

          # A client's relay gone: the answers still due would come through it.
          results =
            if node == h.relay and node != node(),
              do: Results.fail_all(results, {:nodedown, node}),
              else: results

          collect(%{h | results: results, monitors: Map.delete(h.monitors, mref)})
      after
        remaining(h.deadline) ->
          finish(%{h | results: Results.fail_all(results, :timeout)})
      end
    end
  end

  # Answers from `node` travel through the relay's coordinator. Before
  # counting `node` as failed, make sure every answer it sent before going
  # down has been passed on: the coordinator handles messages in order, so
  # once it answers a call, they are all in this process's mailbox.
  defp settle_with_relay(%Handle{hub: hub, ref: ref, results: results, relay: relay} = h, node) do
    if node != relay do
      try do
        GenServer.call({hub, relay}, :synod_barrier, min(remaining(h.deadline), 5_000))
      catch
        :exit, _ -> :ok
      end
    end

    drain(ref, node, results)
  end

  defp drain(ref, node, results) do
    receive do
      {:synod_results, ^ref, ^node, answers} ->
        drain(ref, node, Results.record(results, node, answers))

      {^ref, id, answer, ^node} ->
        drain(ref, node, Results.record(results, node, [{id, answer}]))
    after
      0 -> results
    end
  end

  defp finish(%Handle{} = h) do
    for {mref, _} <- h.monitors, do: Process.demonitor(mref, [:flush])
    {status, result} = Results.finish(h.results)

    if h.kind == :start and status == :error and h.on_failure == :rollback do
      # Stop every child of the request, including those whose answer was
      # lost: a node that went down may still have started some.
      with {:ok, view} <- view(h.hub) do
        timeout =
          if h.deadline == :infinity, do: :infinity, else: max(remaining(h.deadline), 5_000)

        _ = collect(dispatch_stop(view, h.ids, %{await: true, timeout: timeout}))
      end

      {:error, %{result | rolled_back: true}}
    else
      {status, result}
    end
  end

  # ── lookups that a client node may make ──────────────────────────────────

  @doc "See `Synod.lookup/2`."
  @spec lookup(atom(), term()) :: [{node(), pid()}]
  def lookup(hub, child_id) do
    view = view!(hub)
    for pid <- pids(view, child_id), do: {node(pid), pid}
  end

  @doc "See `Synod.whereis/2`."
  @spec whereis(atom(), term()) :: pid() | nil
  def whereis(hub, child_id) do
    view = view!(hub)

    case pids(view, child_id) do
      [] ->
        nil

      [pid] ->
        pid

      [any | _] = pids ->
        [first | _] = Placement.owners(view.ring, view.cfg.replication_factor, child_id)
        Enum.find(pids, any, &(node(&1) == first))
    end
  end

  defp pids(view, id) do
    case locate(view, [id]) do
      [{_, pids}] -> pids
      [] -> []
    end
  end
end
