defmodule Synod.Hub.Reconcile do
  @moduledoc false
  # Pure: what a reconcile of some rows does on this node (docs/hub.md,
  # "Structure"), given the ring, the hub's configuration and the children
  # being hot-swapped (decided when their swap is done). Placement's
  # reconcile rule decides each row; this module turns its answer into the
  # effects the coordinator performs, in order, and counts the children
  # started, stopped or sent away here (the redistribution event's
  # `moved`). No I/O, no messages, no clock.
  #
  # The effects:
  #
  #   * `{:tell_mode, pid, mode}` — a local copy whose mode changed with the
  #     ring (replication factor above 1, a model other than :active_active);
  #   * `{:stop_surplus, ids}` — stop these local copies (`:migrating`), tell
  #     every peer and the subscribers;
  #   * `{:start_missing, entries}` — start these copies here as a member,
  #     tell every peer and the subscribers;
  #   * `{:migrate, target, plan, entries}` — move these children to `target`
  #     by the strategy's `plan` (`Synod.Hub.Migrations.begin/6`).

  alias Synod.Hub.{MigrationStrategy, Placement, Registry}

  @typedoc "What a reconcile needs of the coordinator's state."
  @type ctx :: %{
          me: node(),
          ring: term(),
          rf: pos_integer(),
          model: term(),
          migration: term(),
          migrating: MapSet.t()
        }

  @doc """
  Reconciles `rows` on `ctx.me`; `old_ring` (or nil) is the ring before a
  membership change, for the modes that changed with it. Returns `{moved,
  effects}`; a partitioned side (`partitioned`) changes nothing.
  """
  @spec rows(ctx(), boolean(), list(), term()) :: {non_neg_integer(), list()}
  def rows(_ctx, true = _partitioned, _rows, _old_ring), do: {0, []}

  def rows(ctx, false, rows, old_ring) do
    %{me: me, ring: ring, rf: rf, migrating: migrating} = ctx

    rows =
      if MapSet.size(migrating) == 0,
        do: rows,
        else: Enum.reject(rows, &MapSet.member?(migrating, elem(&1, 0)))

    {starts, migrations, stops} = Placement.reconcile_many(me, ring, rf, rows)

    moved = length(starts) + length(stops) + Enum.sum(Enum.map(migrations, &length(elem(&1, 1))))

    effects =
      mode_changes(ctx, rows, old_ring) ++
        surplus(stops) ++ missing(ctx, starts) ++ moves(ctx, migrations)

    {moved, effects}
  end

  defp mode_changes(%{rf: rf, model: model} = ctx, rows, old_ring)
       when old_ring != nil and rf > 1 and model != :active_active do
    for {id, _, _, pids} <- rows,
        pid = Registry.local_pid(pids, ctx.me),
        is_pid(pid),
        mode = Placement.mode_change(ctx.me, model, rf, old_ring, ctx.ring, id),
        mode != nil,
        do: {:tell_mode, pid, mode}
  end

  defp mode_changes(_ctx, _rows, _old_ring), do: []

  defp surplus([]), do: []
  defp surplus(rows), do: [{:stop_surplus, Enum.map(rows, &elem(&1, 0))}]

  defp missing(_ctx, []), do: []

  defp missing(ctx, rows) do
    %{me: me, ring: ring, rf: rf, model: model} = ctx

    [
      {:start_missing,
       for {id, spec, meta, _} <- rows do
         {id, spec, meta, Placement.mode(model, Placement.owners(ring, rf, id), me)}
       end}
    ]
  end

  defp moves(ctx, migrations) do
    %{ring: ring, rf: rf, model: model} = ctx

    for {target, rows} <- migrations do
      entries =
        for {id, spec, meta, _} <- rows,
            do: {id, spec, meta, Placement.mode(model, Placement.owners(ring, rf, id), target)}

      plan = MigrationStrategy.plan(ctx.migration, Enum.map(rows, &elem(&1, 0)), target)
      {:migrate, target, plan, entries}
    end
  end
end
