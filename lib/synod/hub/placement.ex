defmodule Synod.Hub.Placement do
  @moduledoc false
  # Pure: where children go and which of them move when membership changes.
  # Every member runs the same functions on the same ring and the same
  # registry rows, so they all reach the same decisions without talking.
  # No I/O, no messages, no clock.

  alias Synod.Hub.Spec
  alias Synod.Ring

  @doc "Owners (preference list) of a child id: `rf` distinct members, owner first."
  @spec owners(Ring.t(), pos_integer(), term()) :: [node()]
  # Through the Erlang API (no exception translation: keys are always valid).
  def owners(ring, 1, id), do: [:synod_ring.lookup(ring, Spec.ring_key(id))]
  def owners(ring, rf, id), do: :synod_ring.owners(ring, Spec.ring_key(id), rf)

  @doc "`owners/3` of each id, in order (one ring call for replication factor 1)."
  @spec owners_many(Ring.t(), pos_integer(), [term()]) :: [[node()]]
  def owners_many(ring, 1, ids),
    do: ring |> Ring.lookup_many(Enum.map(ids, &Spec.ring_key/1)) |> Enum.map(&[&1])

  def owners_many(ring, rf, ids), do: Enum.map(ids, &owners(ring, rf, &1))

  @doc "The mode a replica runs in, by its place in the preference list."
  # (The built-ins inline; any other model is a Synod.Hub.ReplicationModel.)
  @spec mode(atom(), [node()], node()) :: :active | :passive
  def mode(:active_active, _owners, _node), do: :active
  def mode(:active_passive, [node | _], node), do: :active
  def mode(:active_passive, _owners, _node), do: :passive
  def mode(model, owners, node), do: model.mode(owners, node)

  @doc """
  Splits `{id, spec, meta}` children into one batch per target node:
  `%{node => [{id, spec, meta, mode}]}`, each child once per owner.
  """
  @spec group(Ring.t(), pos_integer(), atom(), [{term(), map(), term()}]) :: %{node() => list()}
  def group(ring, 1, _model, children) do
    owners = Ring.lookup_many(ring, Enum.map(children, fn {id, _, _} -> Spec.ring_key(id) end))

    children
    |> group_one(owners, %{})
    |> Map.new(fn {node, list} -> {node, Enum.reverse(list)} end)
  end

  def group(ring, rf, model, children) do
    children
    |> Enum.reduce(%{}, fn {id, spec, meta}, acc ->
      owners = owners(ring, rf, id)

      Enum.reduce(owners, acc, fn node, acc ->
        entry = {id, spec, meta, mode(model, owners, node)}
        Map.update(acc, node, [entry], &[entry | &1])
      end)
    end)
    |> Map.new(fn {node, list} -> {node, Enum.reverse(list)} end)
  end

  # One owner per child, from one ring call: a plain walk of both lists.
  defp group_one([{id, spec, meta} | children], [node | owners], acc) do
    entry = {id, spec, meta, :active}

    acc =
      case acc do
        %{^node => list} -> %{acc | node => [entry | list]}
        _ -> Map.put(acc, node, [entry])
      end

    group_one(children, owners, acc)
  end

  defp group_one([], [], acc), do: acc

  @doc """
  What `me` must do about one registry row `{id, spec, meta, pids}` so that
  the child runs exactly on its owners:

    * `{:start, row}` — `me` is an owner with no copy and no surplus copy
      elsewhere is paired with it;
    * `{:migrate, row, target}` — `me` runs a copy it no longer owns and
      hands it to `target`, an owner without a copy;
    * `{:stop, row}` — `me` runs a surplus copy nobody needs;
    * `nil` — nothing to do.

  Surplus copies (running on non-owners, sorted by node) are paired in order
  with owners lacking a copy (sorted by node): the i-th surplus node migrates
  to the i-th missing owner. Missing owners left unpaired start the child
  themselves; surplus nodes left unpaired stop theirs. Every member computes
  the same pairing, so no child is started twice for one move.
  """
  @spec reconcile(node(), Ring.t(), pos_integer(), tuple()) :: nil | tuple()
  def reconcile(me, ring, 1, {id, _spec, _meta, [pid]} = row) do
    # The common case, kept cheap: one copy. Only its holder can have
    # anything to do (move it to the owner), so no ring lookup otherwise.
    if node(pid) == me do
      owner = :synod_ring.lookup(ring, Spec.ring_key(id))
      if owner != me, do: {:migrate, row, owner}
    end
  end

  def reconcile(me, ring, rf, {id, _spec, _meta, pids} = row) do
    owners = owners(ring, rf, id)
    runs = pids |> Enum.map(&node/1) |> Enum.uniq()
    surplus = Enum.sort(runs -- owners)
    missing = Enum.sort(owners -- runs)

    cond do
      me in surplus ->
        index = Enum.find_index(surplus, &(&1 == me))

        case Enum.at(missing, index) do
          nil -> {:stop, row}
          target -> {:migrate, row, target}
        end

      me in missing ->
        index = Enum.find_index(missing, &(&1 == me))
        if index >= length(surplus), do: {:start, row}

      true ->
        nil
    end
  end

  @doc """
  `reconcile/4` for many rows at once, as `{starts, migrations, stops}`:
  the rows to start here, `%{target => rows}` to move, the rows to stop
  (starts and stops in the order given; the order of rows moving to one
  target is not specified). The same decisions as `reconcile/4` row by
  row; with replication factor 1, the rows whose only copy runs on `me`
  (every row of a batch `me` just started) share one ring call.
  """
  @spec reconcile_many(node(), Ring.t(), pos_integer(), [tuple()]) ::
          {[tuple()], %{node() => [tuple()]}, [tuple()]}
  def reconcile_many(me, ring, 1, rows) do
    {mine, others} =
      Enum.split_with(rows, fn
        {_, _, _, [pid]} -> node(pid) == me
        _ -> false
      end)

    owners = Ring.lookup_many(ring, Enum.map(mine, fn row -> Spec.ring_key(elem(row, 0)) end))

    moves = for {row, owner} <- Enum.zip(mine, owners), owner != me, do: {:migrate, row, owner}

    collect(moves ++ Enum.map(others, &reconcile(me, ring, 1, &1)))
  end

  def reconcile_many(me, ring, rf, rows),
    do: collect(Enum.map(rows, &reconcile(me, ring, rf, &1)))

  defp collect(decisions) do
    {starts, migrations, stops} =
      Enum.reduce(decisions, {[], %{}, []}, fn
        nil, acc ->
          acc

        {:start, row}, {starts, migrations, stops} ->
          {[row | starts], migrations, stops}

        {:stop, row}, {starts, migrations, stops} ->
          {starts, migrations, [row | stops]}

        {:migrate, row, target}, {starts, migrations, stops} ->
          {starts, Map.update(migrations, target, [row], &[row | &1]), stops}
      end)

    {Enum.reverse(starts), Map.new(migrations, fn {t, rows} -> {t, Enum.reverse(rows)} end),
     Enum.reverse(stops)}
  end

  @doc """
  The new mode of `me`'s replica when the ring changed from `old` to `new`,
  or `nil` when it did not change (or the model has no passive replicas).
  """
  @spec mode_change(node(), atom(), pos_integer(), Ring.t() | nil, Ring.t(), term()) ::
          nil | :active | :passive
  def mode_change(_me, :active_active, _rf, _old, _new, _id), do: nil
  def mode_change(_me, _model, 1, _old, _new, _id), do: nil
  def mode_change(_me, _model, _rf, nil, _new, _id), do: nil

  def mode_change(me, model, rf, old, new, id) do
    new_owners = owners(new, rf, id)

    if me in new_owners do
      before = mode(model, owners(old, rf, id), me)
      now = mode(model, new_owners, me)
      if before != now, do: now
    end
  end

  @doc """
  Rows without a copy (`{id, spec, slot}`) by the owners other than `me`
  that must hear of them (`synod_orphans`, docs/hub.md "Churn"):
  `%{owner => [orphan]}`.
  """
  @spec by_owner(Ring.t(), pos_integer(), node(), [tuple()]) :: %{node() => [tuple()]}
  def by_owner(ring, rf, me, orphans) do
    Enum.reduce(orphans, %{}, fn {id, _, _} = orphan, acc ->
      for owner <- owners(ring, rf, id),
          owner != me,
          reduce: acc,
          do: (acc -> Map.update(acc, owner, [orphan], &[orphan | &1]))
    end)
  end

  @doc "Whether a side seeing `alive` of `known` members lacks a majority."
  @spec minority?(non_neg_integer(), non_neg_integer()) :: boolean()
  def minority?(alive, known), do: alive < div(known, 2) + 1
end
