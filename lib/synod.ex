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
      others passive), or a module implementing
      `Synod.Hub.ReplicationModel`. With a replication factor above 1 every
      copy receives `{:synod_mode, hub, :active | :passive}` when it starts
      and whenever its mode changes.
    * `:migration` — `:cold` (default: stop the old copy, then start the
      new), `:hot` (start the new copy, hand the state over with
      `Synod.Handover`, then stop the old), or a module implementing
      `Synod.Hub.MigrationStrategy`.
    * `:handover_timeout` — per-child limit for a hot handover (5000 ms).
    * `:partition_strategy` — `:divergence` (default: every side of a
      partition keeps running its children), `:majority` (a side that sees
      fewer than a majority of the members it has known stops its children
      and refuses starts and stops with `{:error, :partitioned}` until
      healed), or a module implementing `Synod.Hub.PartitionStrategy`.
    * `:ring` — `Synod.Ring` options (`:vnodes`, `:seed`); every member must
      use the same.
    * `:max_restarts`, `:max_seconds` — restart intensity of the node's
      supervisor of hub children (default 1000 restarts in 5 s), with the
      rules of `DynamicSupervisor`: more restarts than that restart the hub
      on this node. See "Supervision" in `docs/hub.md`.
    * `:read_concurrency` — `false` (default) or `true`: the ETS option of
      this node's registry and meta tables. On makes each read and write
      several times dearer for one process (the coordinator writes batches
      of tens of thousands of rows; a stop reads every row it stops), and
      pays only with many processes looking children up at once on many
      cores. See "The registry" in `docs/hub.md`.

  Members with different `:replication_factor`, `:replication_model`,
  `:partition_strategy` or `:ring` refuse each other (and log why).

  ## Client nodes

  A node that runs no member of a hub can still call `start_children/3`,
  `stop_children/3` (and the `_child` forms), `await/1`, `whereis/2` and
  `lookup/2`: they go through a connected member (the *relay*, the first
  that answers), which lends its ring and registry, and the answers come
  back through it. The results are the same as on a member, and so is the
  read-your-writes promise, for lookups made through the same relay. The
  other lookups (`children/2`, `tagged/2`, `members/1`, ...) need a member
  on the calling node.

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

  alias Synod.{Handle, StartResult, StopResult}
  alias Synod.Hub.{Caller, Options, Placement, Table}

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
    case Synod.Hub.Supervisor.whereis(hub) do
      nil -> exit({:noproc, {Synod, :stop, [hub, timeout]}})
      sup -> Supervisor.stop(sup, :normal, timeout)
    end
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
  def start_children(hub, specs, opts \\ []) when is_atom(hub) and is_list(specs),
    do: Caller.start_children(hub, specs, opts)

  @doc "Stops one child. Same options and result as `stop_children/3`."
  @spec stop_child(hub(), child_id(), keyword()) ::
          {:ok | :error, StopResult.t() | Handle.t()} | {:error, term()}
  def stop_child(hub, child_id, opts \\ []), do: stop_children(hub, [child_id], opts)

  @doc """
  Stops every copy of each child: one batched request per node that runs
  (or, by the ring, should run) one of them. Options: `:await` and
  `:timeout` as in `start_children/3`.

  A stop that was answered ok holds: no heal, late announcement, migration
  in flight or restarted member brings the child back (a later
  `start_children/3` of the same id starts a new one). See "Stops" in
  `docs/hub.md`.

  Returns `{:ok, %Synod.StopResult{}}`, or `{:error, %Synod.StopResult{}}`
  listing `:not_found` children (no member runs them) and nodes that did
  not answer, or, before anything is sent, `{:error, :partitioned}` (this
  node is in a minority under `partition_strategy: :majority`) or
  `{:error, {:unknown_hub, hub}}`.
  """
  @spec stop_children(hub(), [child_id()], keyword()) ::
          {:ok, StopResult.t() | Handle.t()} | {:error, StopResult.t() | term()}
  def stop_children(hub, child_ids, opts \\ []) when is_atom(hub) and is_list(child_ids),
    do: Caller.stop_children(hub, child_ids, opts)

  @doc """
  Waits for the answers of a request made with `await: false`, until the
  request's own timeout (counted from when it was made). Must be called by
  the process that made the request. Returns what the request would have
  returned with `await: true`.
  """
  @spec await(Handle.t()) :: {:ok | :error, StartResult.t() | StopResult.t()}
  def await(%Handle{} = handle), do: Caller.await(handle)

  @doc """
  The pid of `child_id`: on the first owner when that copy runs, else any
  running copy; `nil` when it does not run. Answered from this node's
  registry; on a node that runs no member of the hub, by a member (see
  "Client nodes" below). Raises `ArgumentError` for an unknown hub.
  """
  @spec whereis(hub(), child_id()) :: pid() | nil
  def whereis(hub, child_id), do: Caller.whereis(hub, child_id)

  @doc """
  Every running copy of `child_id` as `{node, pid}`, from this node's
  registry (on a client node, a member's).
  """
  @spec lookup(hub(), child_id()) :: [{node(), pid()}]
  def lookup(hub, child_id), do: Caller.lookup(hub, child_id)

  @doc """
  Children known to this node's registry. `:global` (default) gives every
  running child as `{child_id, [{node, pid}]}`; `:local` gives the children
  running on this node as `{child_id, pid}`.
  """
  @spec children(hub(), :global | :local) ::
          [{child_id(), [{node(), pid()}]}] | [{child_id(), pid()}]
  def children(hub, scope \\ :global)

  def children(hub, :global), do: hub |> tables!() |> elem(0) |> Table.running()

  def children(hub, :local),
    do: hub |> tables!() |> elem(0) |> Table.local_children(node())

  def children(_hub, scope),
    do: raise(ArgumentError, "scope must be :global or :local, got: #{inspect(scope)}")

  @doc """
  Children started with `metadata: %{tag: tag}`, as `{child_id, [{node, pid}]}`.
  Scans this node's registry (cost linear in the number of children).
  """
  @spec tagged(hub(), term()) :: [{child_id(), [{node(), pid()}]}]
  def tagged(hub, tag) do
    hub |> tables!() |> elem(0) |> Table.tagged(tag)
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

  defp tables!(hub), do: Caller.tables!(hub)
  defp meta_get(meta, key), do: Caller.meta_get(meta, key)

  @doc """
  This node's view of every hub, Raft group, store and connected C node:
  see `Synod.Status` and docs/observability.md. Each part is bounded by
  `timeout:` (default 1000 ms); a part that does not answer is
  `%{error: reason}`.
  """
  @spec status(keyword()) :: map()
  defdelegate status(opts \\ []), to: Synod.Status

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
