defmodule Synod.Hub.Adopt do
  @moduledoc false
  # A coordinator's start: fresh tables, or the tables and children a
  # predecessor that crashed left with the children's supervisor (which
  # outlives the coordinator), adopted (docs/hub.md, "Structure").

  require Logger

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
    registry =
      :ets.new(:synod_registry, [
        :set,
        :protected,
        :compressed,
        heir.(:registry),
        read_concurrency: true
      ])

    meta = :ets.new(:synod_meta, [:set, :protected, heir.(:meta), read_concurrency: true])
    :ets.insert(meta, [{:config, state.cfg}, {:subs, %{}}])
    :persistent_term.put({Synod.Hub, state.hub}, {registry, meta})
    Perform.apply_membership(%{state | registry: registry, meta: meta}, nil, :started)
  end

  # A predecessor crashed: its tables (which every reader kept using) and
  # the children running here are still there. The rows of this node are
  # rebuilt from the children; the other members' rows are kept until each
  # member's sync replaces them (add_peer/3). The members it knew are
  # awaited, not forgotten: the ring does not change, so nothing moves.
  defp adopt(state, registry, meta, local) do
    for {tab, kind} <- [{registry, :registry}, {meta, :meta}],
        do: :ets.setopts(tab, {:heir, state.sup, {:synod_table, kind}})

    Table.insert(registry, Registry.adopt(Table.rows(registry), state.me, local))
    {awaited, gone} = Membership.after_restart(meta_get(meta, :members), state.me, Node.list())

    subs =
      Map.new(meta_get(meta, :subs), fn {pid, {_, ids}} -> {pid, {Process.monitor(pid), ids}} end)

    state = %{
      state
      | registry: registry,
        meta: meta,
        known: meta_get(meta, :known),
        partitioned: meta_get(meta, :partitioned),
        ring: meta_get(meta, :ring),
        subs: subs,
        tombs: tomb_bound(meta)
    }

    Logger.warning(
      "#{Perform.who(state)} restarted: adopted #{length(local)} children, waiting for #{length(awaited)} members"
    )

    state = Enum.reduce(awaited, state, &Perform.await_peer(&2, &1, :nodedown))

    # Members whose node went away meanwhile are gone (their children move).
    case gone do
      [] ->
        state

      gone ->
        Enum.each(gone, &Table.drop_node(registry, &1))
        state = Enum.reduce(gone, state, &Perform.emit(&2, :member_left, {&1, :nodedown}))
        Perform.apply_membership(state, state.ring, {:left, gone})
    end
  end

  defp meta_get(meta, key), do: :ets.lookup_element(meta, key, 2)

  # `tombs` for tombstones a predecessor left: their newest stamp
  defp tomb_bound(meta) do
    case Tombstones.all(meta) do
      [] -> false
      all -> all |> Enum.map(&elem(&1, 1)) |> Enum.max()
    end
  end
end
