defmodule Synod.Hub.Adopt do
  @moduledoc false
  # A coordinator's start: fresh tables, or the tables and children a
  # predecessor that crashed left with the children's supervisor (which
  # outlives the coordinator), adopted (docs/hub.md, "Structure"). What an
  # adoption means is decided by plan/4 (pure); the rest is the small shell
  # part: the tables' heir, the rows rebuilt, the meta table read, the
  # subscribers monitored again, the effects handed to Synod.Hub.Perform.

  alias Synod.Hub.{EventQueue, Membership, Perform, Registry, Table, Tombstones}

  @doc """
  The state of a coordinator for `cfg` that attached to the children's
  supervisor `sup` with `token`, before its tables are made or adopted
  (`tables/3`).
  """
  @spec state(map(), pid(), reference()) :: Perform.state()
  def state(cfg, sup, token) do
    %{
      hub: cfg.name,
      cfg: cfg,
      me: node(),
      # What members must agree on, compared as a plain term in the handshake.
      hash:
        {cfg.replication_factor, cfg.replication_model,
         Keyword.get(cfg.ring, :vnodes, :synod_ring.default_vnodes()),
         Keyword.get(cfg.ring, :seed, :synod_ring.default_seed()), cfg.partition_strategy},
      sup: sup,
      token: token,
      registry: nil,
      meta: nil,
      # node => {coordinator pid, monitor}, or {nil, nil} while waiting for
      # a restarted coordinator (`restarting` holds its timer)
      peers: %{},
      restarting: %{},
      known: MapSet.new([node()]),
      ring: nil,
      partitioned: false,
      subs: %{},
      # the moves this node started: the books of Synod.Hub.Migrations
      # (its two fields, kept flat here)
      migrations: %{},
      migrating: MapSet.new(),
      # {node, rows}: the rows the reconcile after `node`'s leave decides
      # (Table.drop_lost/4), kept from its {:drop_node, node} to its
      # {:reconcile, _, {:left, node}} effect
      lost: nil,
      queue: EventQueue.new(),
      # hybrid clock (µs): incarnations of starts, stamps of stops
      clock: 0,
      # false when no tombstone exists, else a stamp no tombstone here is
      # above: an incarnation above it is stopped by none, so the lookups
      # are skipped (a start after the stops it follows: docs/hub.md,
      # "Performance")
      tombs: false,
      # false when no tombstone holds a copy it stopped here, else the
      # monotonic time (ms) the latest was recorded (Tombstones.copies_sweep/2)
      copies: false,
      # healed, waiting for a sync before reconciling (apply_membership/2)
      healing: false
    }
  end

  @doc """
  Makes the tables (`nil`: none was left) or adopts the predecessor's
  `{registry, meta}` and its children running here (`local`).
  """
  @spec tables(Perform.state(), nil | {:ets.tid(), :ets.tid()}, list()) :: Perform.state()
  def tables(state, nil, _local), do: fresh(state)
  def tables(state, {registry, meta}, local), do: adopt(state, registry, meta, local)

  defp fresh(state) do
    heir = fn kind -> {:heir, state.sup, {:synod_table, kind}} end

    # :compressed keeps a row near 160 bytes (see docs/hub.md, "Memory").
    # read_concurrency (the `read_concurrency:` option, off by default)
    # makes every read and write of a big batch several times dearer for
    # one process (docs/hub.md, "The registry"); it pays only with many
    # readers at once on many cores.
    rc = {:read_concurrency, Map.get(state.cfg, :read_concurrency, false)}
    registry = :ets.new(:synod_registry, [:set, :protected, :compressed, heir.(:registry), rc])
    meta = :ets.new(:synod_meta, [:set, :protected, heir.(:meta), rc])
    :ets.insert(meta, [{:config, state.cfg}, {:subs, %{}}])
    :persistent_term.put({Synod.Hub, state.hub}, {registry, meta})
    Perform.apply_membership(%{state | registry: registry, meta: meta}, nil, :started)
  end

  # A predecessor crashed: its tables (which every reader kept using) and
  # the children running here are still there. The rows of this node are
  # rebuilt from the children (Registry.adopt/3); what the predecessor
  # kept in the meta table is read, and plan/4 decides the rest.
  defp adopt(state, registry, meta, local) do
    for {tab, kind} <- [{registry, :registry}, {meta, :meta}],
        do: :ets.setopts(tab, {:heir, state.sup, {:synod_table, kind}})

    Table.insert(registry, Registry.adopt(Table.rows(registry), state.me, local))

    kept =
      Map.new([:members, :known, :partitioned, :ring, :subs], &{&1, meta_get(meta, &1)})
      |> Map.put(:tombstones, Tombstones.all(meta))

    {fields, effects} = plan(kept, state.me, length(local), Node.list())
    # the subscribers are watched again (the monitors died with the predecessor)
    subs = Map.new(kept.subs, fn {pid, {_, ids}} -> {pid, {Process.monitor(pid), ids}} end)
    state = Map.merge(%{state | registry: registry, meta: meta, subs: subs}, fields)
    # the predecessor's tombstones may hold copies: counted as recorded now
    copies = if fields.tombs == false, do: false, else: System.monotonic_time(:millisecond)
    Perform.perform(%{state | copies: copies}, effects)
  end

  @doc """
  What a coordinator that adopted its predecessor's tables makes of what
  the predecessor `kept` in the meta table (`members`, `known`,
  `partitioned`, `ring` and the `tombstones` as `[{id, t}]`), on `me`
  with `adopted` children found running and the nodes `connected` now.
  Returns the state's fields (`known`, `partitioned`, `ring`, `tombs`)
  and the effects, in order: a warning; `{:await_peer, node, :nodedown}`
  for each member still connected (awaited, not forgotten: the ring does
  not change, so nothing moves; the other members' rows are kept until
  each member's sync replaces them); and for the members whose node went
  away meanwhile, which are gone (their children move): `{:drop_copies,
  node}` for each, `{:event, :member_left, {node, :nodedown}}` for each,
  then `{:membership, {:left, gone}}`.
  """
  @spec plan(map(), node(), non_neg_integer(), [node()]) :: {map(), list()}
  def plan(kept, me, adopted, connected) do
    {awaited, gone} = Membership.after_restart(kept.members, me, connected)

    fields = %{
      known: kept.known,
      partitioned: kept.partitioned,
      ring: kept.ring,
      tombs: Tombstones.bound(kept.tombstones)
    }

    log = "restarted: adopted #{adopted} children, waiting for #{length(awaited)} members"

    left =
      if gone == [],
        do: [],
        else:
          for(node <- gone, do: {:drop_copies, node}) ++
            for(node <- gone, do: {:event, :member_left, {node, :nodedown}}) ++
            [{:membership, {:left, gone}}]

    {fields,
     [{:log, :warning, log}] ++ for(node <- awaited, do: {:await_peer, node, :nodedown}) ++ left}
  end

  defp meta_get(meta, key), do: :ets.lookup_element(meta, key, 2)
end
