defmodule Synod do
  @moduledoc """
  A distributed process hub: start and stop processes across a BEAM
  cluster, placed by a consistent hash ring, with results delivered to the
  callers that wait for them.

  ## Starting a hub

  Run the same hub (same name, same options) on every node that should
  host its children, usually in your application's supervision tree:

      children = [
        {Synod, name: :workers, replication_factor: 1}
      ]

  The nodes running a hub are its *members*. A hub joins the others when it
  starts and whenever a node connects (a handshake between coordinators), and
  leaves when its node goes down or the hub stops. Every member builds the
  same ring (`Synod.Ring`) from the same membership, so every member agrees,
  without talking, on which node owns which child.

  ## Children

      {:ok, result} =
        Synod.start_children(:workers, [
          %{id: "user:1", start: {MyWorker, :start_link, [1]}},
          %{id: "user:2", start: {MyWorker, :start_link, [2]}}
        ])

      result.started
      #=> [{"user:1", :"b@127.0.0.1", #PID<...>}, {"user:2", :"a@127.0.0.1", #PID<...>}]

      Synod.whereis(:workers, "user:1")
      #=> #PID<12345.210.0>

      {:ok, _} = Synod.stop_children(:workers, ["user:1", "user:2"])

  A child spec is anything `Supervisor.child_spec/2` accepts; its `:id` is
  the child's identity across the whole cluster. Ids that are binaries or
  atoms are placed by their bytes (the C node places them identically); other
  terms by their deterministic external term format.

  Start and stop send one batched request per target node and never wait on
  a node beyond `:timeout`: a node that does not answer in time appears in
  the result as an error for each of its children, a node that goes down
  while the caller waits as `{:nodedown, node}`.

  ## Options of `start_link/1` (and the child spec)

    * `:name` (required) — the hub's name, an atom. The coordinator is
      registered under it on each member node.
    * `:replication_factor` — how many members run each child (default 1).
    * `:replication_model` — `:active_active` (default: every copy is
      active) or `:active_passive` (the first owner's copy is active, the
      others passive). With a replication factor above 1 every copy receives
      `{:synod_mode, hub, :active | :passive}` when it starts and whenever
      its mode changes.
    * `:migration` — `:cold` (default: stop the old copy, then start the
      new) or `:hot` (start the new copy, hand the state over with
      `Synod.Handover`, then stop the old).
    * `:handover_timeout` — per-child limit for a hot handover (5000 ms).
    * `:partition_strategy` — `:divergence` (default: every side of a
      partition keeps running its children) or `:majority` (a side that sees
      fewer than a majority of the members it has known stops its children
      and refuses starts with `{:error, :partitioned}` until healed).
    * `:ring` — `Synod.Ring` options (`:vnodes`, `:seed`); every member must
      use the same.
    * `:max_restarts`, `:max_seconds` — restart intensity of the node's
      supervisor of hub children (default 1000 restarts in 5 s), with the
      rules of `DynamicSupervisor`: more restarts than that restart the hub
      on this node. See "Supervision" in `docs/hub.md`.

  Members with different `:replication_factor`, `:replication_model`,
  `:partition_strategy` or `:ring` refuse each other (and log why).

  ## Redistribution

  When a member joins, the children it now owns move to it (cold or hot
  swap). When a member leaves, its children restart on their new owners
  from the specs every member keeps. Once membership settles, every child
  runs exactly on its owners, once per owner.

  ## Events

  `subscribe/2` delivers `{:synod, hub, event_id, data}` messages:

    * `:children_started` — `{node, [{child_id, pid}]}`
    * `:children_stopped` — `{node, [{child_id, pid}]}`
    * `:children_migrated` — `{from_node, to_node, [{child_id, new_pid}]}`
    * `:member_joined` — `node`; `:member_left` — `{node, reason}`
    * `:partitioned` — the members this side sees; `:healed` — likewise

  and any event sent with `Synod.Dispatcher.dispatch_event/4` or
  `Synod.Dispatcher.propagate_event/3`. See `docs/hub.md` and
  `docs/protocol.md`.
  """

  alias Synod.{Dispatcher, Handle, StartResult, StopResult}
  alias Synod.Hub.{Options, Placement, Results, Spec}

  @type hub :: atom()
  @type child_id :: term()

  @doc """
  A child spec for `{Synod, opts}`. Options are validated now: a bad option
  raises `ArgumentError` naming it.
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    cfg = Options.hub!(opts)
    %{id: {Synod, cfg.name}, start: {Synod, :start_link, [opts]}, type: :supervisor}
  end

  @doc "Starts a hub on this node (see the module doc for options)."
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts), do: Synod.Hub.Supervisor.start_link(Options.hub!(opts))

  @doc """
  Starts a hub on this node without linking it to the caller: for the shell,
  scripts, or setting up a node remotely with `:erpc` (whose calling process
  exits at once). Applications should use the child spec instead.
  """
  @spec start(keyword()) :: Supervisor.on_start()
  def start(opts) do
    with {:ok, pid} <- start_link(opts) do
      Process.unlink(pid)
      {:ok, pid}
    end
  end

  @doc """
  Stops the hub on this node: it leaves the membership and its children
  restart on their new owners (on the other members).
  """
  @spec stop(hub(), timeout()) :: :ok
  def stop(hub, timeout \\ :infinity) do
    Supervisor.stop(Synod.Hub.Supervisor.supervisor_name(hub), :normal, timeout)
  end

  @doc """
  Starts one child. Same options and result as `start_children/3`.
  """
  @spec start_child(hub(), Supervisor.child_spec() | {module(), term()} | module(), keyword()) ::
          {:ok, StartResult.t() | Handle.t()} | {:error, term()}
  def start_child(hub, spec, opts \\ []), do: start_children(hub, [spec], opts)

  @doc """
  Starts `specs` on their owners: one batched request per target node.

  Options:

    * `:await` — `true` (default) blocks until every answer is in (or the
      timeout passes) and returns the result; `false` returns
      `{:ok, %Synod.Handle{}}` at once, to pass to `await/1` later.
    * `:timeout` — how long to wait for answers, in ms (default 5000).
    * `:on_failure` — `:continue` (default) keeps what started;
      `:rollback` stops every child of the request if any failed.
    * `:check_existing` — `true` (default) refuses ids already in the
      registry with `{:error, {:already_started, ids}}`; `false` skips the
      check (an owner still never runs two copies: it answers the pid that
      runs).
    * `:metadata` — a map stored with each child; its `:tag` is what
      `tagged/2` looks up.

  Returns `{:ok, %Synod.StartResult{}}` when every replica started,
  `{:error, %Synod.StartResult{}}` when some did not, or, before anything is
  sent: `{:error, {:invalid_children, [{spec_or_id, reason}]}}`,
  `{:error, {:duplicate_ids, ids}}` (within the request),
  `{:error, {:already_started, ids}}`, `{:error, :partitioned}`,
  `{:error, {:unknown_hub, hub}}`.
  """
  @spec start_children(hub(), [term()], keyword()) ::
          {:ok, StartResult.t() | Handle.t()} | {:error, StartResult.t() | term()}
  def start_children(hub, specs, opts \\ []) when is_atom(hub) and is_list(specs) do
    opts = Options.start!(opts)

    with {:ok, {registry, meta}} <- tables(hub),
         :ok <- check_partition(meta),
         {:ok, children} <- normalize(specs),
         ids = Enum.map(children, &elem(&1, 0)),
         :ok <- check_duplicates(ids),
         :ok <- check_existing(opts.check_existing, registry, ids) do
      cfg = meta_get(meta, :config)
      children = for {id, spec} <- children, do: {id, spec, opts.metadata}

      groups =
        Placement.group(
          meta_get(meta, :ring),
          cfg.replication_factor,
          cfg.replication_model,
          children
        )

      expected =
        Map.new(groups, fn {node, entries} -> {node, Enum.map(entries, &elem(&1, 0))} end)

      handle =
        dispatch(hub, :start, expected, opts, ids, fn ref ->
          Dispatcher.children_start(
            hub,
            for({node, entries} <- groups, do: {node, {ref, [self()], entries, []}})
          )
        end)

      if opts.await, do: await(handle), else: {:ok, handle}
    end
  end

  @doc "Stops one child. Same options and result as `stop_children/3`."
  @spec stop_child(hub(), child_id(), keyword()) ::
          {:ok | :error, StopResult.t() | Handle.t()} | {:error, term()}
  def stop_child(hub, child_id, opts \\ []), do: stop_children(hub, [child_id], opts)

  @doc """
  Stops every copy of each child: one batched request per node that runs
  (or, by the ring, should run) one of them. Options: `:await` and
  `:timeout` as in `start_children/3`.

  Returns `{:ok, %Synod.StopResult{}}`, or `{:error, %Synod.StopResult{}}`
  listing `:not_found` children and nodes that did not answer, or
  `{:error, {:unknown_hub, hub}}`.
  """
  @spec stop_children(hub(), [child_id()], keyword()) ::
          {:ok, StopResult.t() | Handle.t()} | {:error, StopResult.t() | term()}
  def stop_children(hub, child_ids, opts \\ []) when is_atom(hub) and is_list(child_ids) do
    opts = Options.stop!(opts)

    with {:ok, {registry, meta}} <- tables(hub) do
      handle = dispatch_stop(hub, registry, meta, Enum.uniq(child_ids), opts)
      if opts.await, do: await(handle), else: {:ok, handle}
    end
  end

  @doc """
  Waits for the answers of a request made with `await: false`, until the
  request's own timeout (counted from when it was made). Must be called by
  the process that made the request. Returns what the request would have
  returned with `await: true`.
  """
  @spec await(Handle.t()) :: {:ok | :error, StartResult.t() | StopResult.t()}
  def await(%Handle{owner: owner} = handle) do
    if owner != self(),
      do: raise(ArgumentError, "a Synod.Handle can only be awaited by the process that made it")

    collect(handle)
  end

  @doc """
  The pid of `child_id`: on the first owner when that copy runs, else any
  running copy; `nil` when it does not run. Answered from this node's
  registry. Raises `ArgumentError` for an unknown hub.
  """
  @spec whereis(hub(), child_id()) :: pid() | nil
  def whereis(hub, child_id) do
    case lookup(hub, child_id) do
      [] ->
        nil

      [{_node, pid}] ->
        pid

      copies ->
        {_, meta} = tables!(hub)

        [first | _] =
          Placement.owners(
            meta_get(meta, :ring),
            meta_get(meta, :config).replication_factor,
            child_id
          )

        Enum.find_value(copies, fn {node, pid} -> node == first && pid end) || elem(hd(copies), 1)
    end
  end

  @doc "Every running copy of `child_id` as `{node, pid}`, from this node's registry."
  @spec lookup(hub(), child_id()) :: [{node(), pid()}]
  def lookup(hub, child_id) do
    {registry, _} = tables!(hub)

    case :ets.lookup(registry, child_id) do
      [{_, _, _, pids}] -> for pid <- pids, do: {node(pid), pid}
      [] -> []
    end
  end

  @doc """
  Children known to this node's registry. `:global` (default) gives every
  running child as `{child_id, [{node, pid}]}`; `:local` gives the children
  running on this node as `{child_id, pid}`.
  """
  @spec children(hub(), :global | :local) ::
          [{child_id(), [{node(), pid()}]}] | [{child_id(), pid()}]
  def children(hub, scope \\ :global)

  def children(hub, :global) do
    {registry, _} = tables!(hub)

    for {id, _, _, [_ | _] = pids} <- :ets.tab2list(registry),
        do: {id, for(pid <- pids, do: {node(pid), pid})}
  end

  def children(hub, :local) do
    {registry, _} = tables!(hub)
    me = node()

    :ets.foldl(
      fn {id, _, _, pids}, acc ->
        case Enum.find(pids, &(node(&1) == me)) do
          nil -> acc
          pid -> [{id, pid} | acc]
        end
      end,
      [],
      registry
    )
  end

  def children(_hub, scope),
    do: raise(ArgumentError, "scope must be :global or :local, got: #{inspect(scope)}")

  @doc """
  Children started with `metadata: %{tag: tag}`, as `{child_id, [{node, pid}]}`.
  Scans this node's registry (cost linear in the number of children).
  """
  @spec tagged(hub(), term()) :: [{child_id(), [{node(), pid()}]}]
  def tagged(hub, tag) do
    {registry, _} = tables!(hub)
    spec = [{{:"$1", :_, %{tag: tag}, :"$2"}, [], [{{:"$1", :"$2"}}]}]

    for {id, [_ | _] = pids} <- :ets.select(registry, spec),
        do: {id, for(pid <- pids, do: {node(pid), pid})}
  end

  @doc "The hub's members as this node sees them, sorted."
  @spec members(hub()) :: [node()]
  def members(hub) do
    {_, meta} = tables!(hub)
    meta_get(meta, :members)
  end

  @doc "The owners of `child_id` under the current ring, first owner first."
  @spec owners(hub(), child_id()) :: [node()]
  def owners(hub, child_id) do
    {_, meta} = tables!(hub)
    Placement.owners(meta_get(meta, :ring), meta_get(meta, :config).replication_factor, child_id)
  end

  @doc "Whether this node's side is partitioned (only with `partition_strategy: :majority`)."
  @spec partitioned?(hub()) :: boolean()
  def partitioned?(hub) do
    {_, meta} = tables!(hub)
    meta_get(meta, :partitioned)
  end

  @doc """
  Subscribes the calling process to the hub's events on this node:
  `events` is `:all` (default) or a list of event ids. Each event arrives as
  `{:synod, hub, event_id, data}`. Subscribing again replaces the list; the
  subscription ends with `unsubscribe/1` or when the process exits.
  """
  @spec subscribe(hub(), :all | [atom()]) :: :ok
  def subscribe(hub, events \\ :all) do
    unless events == :all or (is_list(events) and Enum.all?(events, &is_atom/1)) do
      raise ArgumentError, "events must be :all or a list of atoms, got: #{inspect(events)}"
    end

    tables!(hub)
    GenServer.call(hub, {:synod_subscribe, self(), events})
  end

  @doc "Ends the calling process's subscription to the hub's events."
  @spec unsubscribe(hub()) :: :ok
  def unsubscribe(hub) do
    tables!(hub)
    GenServer.call(hub, {:synod_unsubscribe, self()})
  end

  # ── internals ──────────────────────────────────────────────────────────

  defp tables(hub) do
    case :persistent_term.get({Synod.Hub, hub}, nil) do
      {_registry, meta} = tables ->
        if :ets.info(meta, :id) == :undefined,
          do: {:error, {:unknown_hub, hub}},
          else: {:ok, tables}

      nil ->
        {:error, {:unknown_hub, hub}}
    end
  end

  defp tables!(hub) do
    case tables(hub) do
      {:ok, tables} ->
        tables

      {:error, _} ->
        raise ArgumentError, "unknown hub #{inspect(hub)}: no hub of that name runs on #{node()}"
    end
  end

  defp meta_get(meta, key), do: :ets.lookup_element(meta, key, 2)

  defp check_partition(meta),
    do: if(meta_get(meta, :partitioned), do: {:error, :partitioned}, else: :ok)

  defp normalize(specs) do
    case Spec.normalize_all(specs) do
      {:ok, children} -> {:ok, children}
      {:error, bad} -> {:error, {:invalid_children, bad}}
    end
  end

  defp check_duplicates(ids) do
    case Spec.duplicates(ids) do
      [] -> :ok
      dups -> {:error, {:duplicate_ids, dups}}
    end
  end

  defp check_existing(false, _registry, _ids), do: :ok

  defp check_existing(true, registry, ids) do
    case Enum.filter(ids, &:ets.member(registry, &1)) do
      [] -> :ok
      existing -> {:error, {:already_started, existing}}
    end
  end

  defp dispatch_stop(hub, registry, meta, ids, opts) do
    cfg = meta_get(meta, :config)
    ring = meta_get(meta, :ring)

    # Ask every node the registry says runs a copy, and the owners too in
    # case this node's registry has not heard of a start yet.
    owners = Placement.owners_many(ring, cfg.replication_factor, ids)

    requests =
      ids
      |> Enum.zip(owners)
      |> Enum.reduce(%{}, fn {id, owners}, acc ->
        running =
          case :ets.lookup(registry, id) do
            [{_, _, _, pids}] -> Enum.map(pids, &node/1)
            [] -> []
          end

        nodes = if running == owners, do: owners, else: Enum.uniq(running ++ owners)
        Enum.reduce(nodes, acc, fn node, acc -> Map.update(acc, node, [id], &[id | &1]) end)
      end)
      |> Map.new(fn {node, ids} -> {node, Enum.reverse(ids)} end)

    dispatch(hub, :stop, requests, Map.put(opts, :on_failure, :continue), ids, fn ref ->
      Dispatcher.children_stop(
        hub,
        for({node, ids} <- requests, do: {node, {ref, [self()], ids, []}})
      )
    end)
  end

  # `expected` maps each target node to the child ids it must answer for.
  defp dispatch(hub, kind, expected, opts, ids, send_fun) do
    ref = make_ref()
    # Monitors first, so a node that is already gone answers with :DOWN.
    monitors = Map.new(expected, fn {node, _} -> {Process.monitor({hub, node}), node} end)
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
      owner: self()
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

          results =
            h |> settle_with_coordinator(node) |> Results.fail_node(node, {:nodedown, node})

          collect(%{h | results: results, monitors: Map.delete(h.monitors, mref)})
      after
        remaining(h.deadline) ->
          finish(%{h | results: Results.fail_all(results, :timeout)})
      end
    end
  end

  # Answers from `node` travel through this node's coordinator. Before
  # counting `node` as failed, make sure every answer it sent before going
  # down has been passed on: the coordinator handles messages in order, so
  # once it answers a call, they are all in this process's mailbox.
  defp settle_with_coordinator(%Handle{hub: hub, ref: ref, results: results} = h, node) do
    if node != node() do
      try do
        GenServer.call(hub, :synod_barrier, min(remaining(h.deadline), 5_000))
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
      with {:ok, {registry, meta}} <- tables(h.hub) do
        timeout =
          if h.deadline == :infinity, do: :infinity, else: max(remaining(h.deadline), 5_000)

        _ = collect(dispatch_stop(h.hub, registry, meta, h.ids, %{await: true, timeout: timeout}))
      end

      {:error, %{result | rolled_back: true}}
    else
      {status, result}
    end
  end

  # -- leader watches (Raft groups, see Synod.Raft) ---------------------------

  @doc """
  The leader of the Raft group `group` as this node's member knows it, or
  `nil`. Answered locally, without a message. See `Synod.Raft`.
  """
  @spec leader(atom()) :: node() | nil
  defdelegate leader(group), to: Synod.Raft

  @doc "Whether this node's member of the Raft group `group` is its leader."
  @spec leader?(atom()) :: boolean()
  defdelegate leader?(group), to: Synod.Raft

  @doc "The latest term this node's member of `group` knows of (0 without a member)."
  @spec term(atom()) :: non_neg_integer()
  defdelegate term(group), to: Synod.Raft

  @doc """
  Watches this node's member of the Raft group `group` for leadership
  changes; see `Synod.Raft.add_leader_watch/4`. `target` is a function
  called as `fun.(key, event, before, after)` or a pid that receives
  `{:synod_leader_watch, group, key, event, before, after}`; `event_type` is
  `:all`, `:become_leader` or `:become_follower`. A key in use is replaced.

  `before` and `after` are the member's whole view: `%{role, leader, term,
  commit, applied, voters}` (`voters` as nodes). Role, leader and term are
  the change's own; the indexes and voters are what the member reports
  when the change is delivered (`nil` if it cannot say), so those of
  `after` are at least the change's. A bad argument raises
  `ArgumentError` naming it.
  """
  @spec add_leader_watch(atom(), term(), function() | pid(), :all | Synod.Raft.watch_event()) ::
          :ok | {:error, :no_member}
  def add_leader_watch(group, key, target, event_type \\ :all) do
    Synod.Coord.Options.check!(group, :group, :atom)
    Synod.Coord.Options.check!(target, :target, {:or, [:pid, {:fun, 4}]})

    Synod.Coord.Options.check!(
      event_type,
      :event_type,
      {:in, [:all, :become_leader, :become_follower]}
    )

    Synod.Raft.add_leader_watch(group, key, target, event_type)
  end

  @doc "Removes the leader watch under `key`."
  @spec remove_leader_watch(atom(), term()) :: :ok | {:error, :no_member}
  defdelegate remove_leader_watch(group, key), to: Synod.Raft
end
