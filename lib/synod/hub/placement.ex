defmodule Synod.Hub.Placement do
  @moduledoc false
  # Pure: where children go and which of them move when membership changes.
  # Every member runs the same functions on the same ring and the same
  # registry rows, so they all reach the same decisions without talking.
  # No I/O, no messages, no clock.

  alias Synod.Hub.{Registry, Spec}
  alias Synod.Ring

  @doc "Owners (preference list) of a child id: `rf` distinct members, owner first."
  @spec owners(Ring.t(), pos_integer(), term()) :: [node()]
  # Through the Erlang API (no exception translation: keys are always valid).
  def owners(ring, 1, id), do: [:synod_ring.lookup(ring, Spec.ring_key(id))]
  def owners(ring, rf, id), do: :synod_ring.owners(ring, Spec.ring_key(id), rf)

  @doc "The one owner (replication factor 1) of each id, in order: one ring call."
  @spec owner_many(Ring.t(), [term()]) :: [node()]
  def owner_many(ring, ids), do: Ring.lookup_many(ring, ring_keys(ids))

  # The ring keys of `ids`: the list itself when every id is its own key
  # (binaries and atoms, the usual ids), so no second list is built.
  defp ring_keys(ids) do
    if own_keys?(ids), do: ids, else: Enum.map(ids, &Spec.ring_key/1)
  end

  defp own_keys?([id | ids]) when is_binary(id) or is_atom(id), do: own_keys?(ids)
  defp own_keys?([]), do: true
  defp own_keys?(_), do: false

  @doc "`owners/3` of each id, in order (one ring call for replication factor 1)."
  @spec owners_many(Ring.t(), pos_integer(), [term()]) :: [[node()]]
  def owners_many(ring, 1, ids), do: ring |> owner_many(ids) |> Enum.map(&[&1])

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
        prepend(acc, node, {id, spec, meta, mode(model, owners, node)})
      end)
    end)
    |> Map.new(fn {node, list} -> {node, Enum.reverse(list)} end)
  end

  @doc """
  `group/4` for `{id, spec}` children that all carry the same `slot` (one
  request's): the entries are built as they are grouped, with no pass to
  add the slot first.
  """
  @spec group(Ring.t(), pos_integer(), atom(), [{term(), term()}], Registry.slot()) ::
          %{node() => list()}
  def group(ring, 1, _model, children, slot) do
    owners = Ring.lookup_many(ring, for({id, _} <- children, do: Spec.ring_key(id)))

    children
    |> group_slot(slot, owners, %{})
    |> Map.new(fn {node, list} -> {node, :lists.reverse(list)} end)
  end

  def group(ring, rf, model, children, slot),
    do: group(ring, rf, model, for({id, spec} <- children, do: {id, spec, slot}))

  @doc """
  `group/5` with replication factor 1 for `{id, spec}` children given in
  reverse order with their ids (`children_rev`, `ids_rev`, as
  `Spec.normalize_all_rev/1` has them): `{groups, expected}`, each node's
  entries `{id, spec, slot, :active}` and its ids, both in the children's
  order, from one ring call and one walk with no list reversed.
  """
  @spec group_rev(Ring.t(), [{term(), term()}], [term()], Registry.slot()) ::
          {%{node() => list()}, %{node() => list()}}
  def group_rev(ring, children_rev, ids_rev, slot),
    do: group_rev(children_rev, owner_many(ring, ids_rev), slot, %{}, %{})

  defp group_rev([{id, spec} | children], [node | owners], slot, groups, expected),
    do:
      group_rev(
        children,
        owners,
        slot,
        prepend(groups, node, {id, spec, slot, :active}),
        prepend(expected, node, id)
      )

  defp group_rev([], [], _slot, groups, expected), do: {groups, expected}

  defp group_slot([{id, spec} | children], slot, [node | owners], acc),
    do: group_slot(children, slot, owners, prepend(acc, node, {id, spec, slot, :active}))

  defp group_slot([], _slot, [], acc), do: acc

  # One owner per child, from one ring call: a plain walk of both lists.
  defp group_one([{id, spec, meta} | children], [node | owners], acc),
    do: group_one(children, owners, prepend(acc, node, {id, spec, meta, :active}))

  defp group_one([], [], acc), do: acc

  @doc """
  `acc` (`%{key => list}`) with `item` put in front of `key`'s list (a new
  list for a new key): how children and ids are grouped per node.
  """
  @spec prepend(map(), term(), term()) :: map()
  def prepend(acc, key, item) do
    case acc do
      %{^key => list} -> %{acc | key => [item | list]}
      _ -> Map.put(acc, key, [item])
    end
  end

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
    # One copy on `me` (it may move) or none (its owner starts it): both
    # decided from one ring call; one copy elsewhere needs nothing (the
    # rows of a batch another member just started: skipped in the same
    # pass that picks the others).
    {batched, others} = split_one(rows, me, [], [])

    owners = Ring.lookup_many(ring, for(row <- batched, do: Spec.ring_key(elem(row, 0))))

    decided = one_owners(me, batched, owners, [])
    collect(decided ++ for(row <- others, do: reconcile(me, ring, 1, row)))
  end

  def reconcile_many(me, ring, rf, rows),
    do: collect(Enum.map(rows, &reconcile(me, ring, rf, &1)))

  # The rows with one copy on `me` or none (`batched`), and those with
  # more than one copy (`others`), in order; one copy elsewhere: neither.
  defp split_one([{_, _, _, [pid]} = row | rows], me, batched, others) when node(pid) == me,
    do: split_one(rows, me, [row | batched], others)

  defp split_one([{_, _, _, [_]} | rows], me, batched, others),
    do: split_one(rows, me, batched, others)

  defp split_one([{_, _, _, []} = row | rows], me, batched, others),
    do: split_one(rows, me, [row | batched], others)

  defp split_one([row | rows], me, batched, others),
    do: split_one(rows, me, batched, [row | others])

  defp split_one([], _me, batched, others), do: {:lists.reverse(batched), :lists.reverse(others)}

  defp one_owners(me, [row | rows], [owner | owners], acc) do
    case one_owner(me, row, owner) do
      nil -> one_owners(me, rows, owners, acc)
      decision -> one_owners(me, rows, owners, [decision | acc])
    end
  end

  defp one_owners(_me, [], [], acc), do: :lists.reverse(acc)

  # `reconcile/4` with replication factor 1 for a row with one copy on `me`
  # or none, its owner being known.
  defp one_owner(me, {_, _, _, []} = row, me), do: {:start, row}
  defp one_owner(_me, {_, _, _, []}, _owner), do: nil
  defp one_owner(me, _row, me), do: nil
  defp one_owner(_me, row, owner), do: {:migrate, row, owner}

  @doc """
  The rows after node `lost` left, in one pass over `rows` (the registry
  before): `{changed, candidates}`, `changed` being every row that had a
  copy on `lost`, without it (to store), and `candidates` the rows (as they
  are now, in the order given) that `reconcile/4` can decide other than
  `nil` under any ring: those with a copy on `me` or with copies on fewer
  than `rf` nodes. Every other row runs on at least `rf` nodes, none of
  them `me`: `me` can only be a missing owner there, and at least as many
  surplus copies as missing owners exist, so `me` is paired with one and
  does nothing. `reconcile_many/4` of the candidates is thus that of every
  row (without `lost`'s copies), for any ring.
  """
  @spec after_loss([tuple()], node(), node(), pos_integer()) :: {[tuple()], [tuple()]}
  def after_loss(rows, lost, me, rf) do
    {changed, candidates} =
      Enum.reduce(rows, {[], []}, fn {id, spec, slot, pids} = row, {changed, candidates} ->
        {row, changed} =
          case drop(pids, lost, []) do
            :same -> {row, changed}
            rest -> {{id, spec, slot, rest}, [{id, spec, slot, rest} | changed]}
          end

        if candidate?(elem(row, 3), me, rf),
          do: {changed, [row | candidates]},
          else: {changed, candidates}
      end)

    {changed, Enum.reverse(candidates)}
  end

  # `pids` without those on `lost`, or :same.
  defp drop([], _lost, _kept), do: :same

  defp drop([pid | rest], lost, kept) do
    if node(pid) == lost,
      do: Enum.reverse(kept, Enum.reject(rest, &(node(&1) == lost))),
      else: drop(rest, lost, [pid | kept])
  end

  defp candidate?([], _me, _rf), do: true
  defp candidate?([pid], me, rf), do: rf > 1 or node(pid) == me

  defp candidate?(pids, me, rf) do
    nodes = pids |> Enum.map(&node/1) |> Enum.uniq()
    me in nodes or length(nodes) < rf
  end

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
    # (one ring call for replication factor 1: after a loss, thousands)
    owners = owners_many(ring, rf, Enum.map(orphans, &elem(&1, 0)))

    Enum.zip(orphans, owners)
    |> Enum.reduce(%{}, fn {orphan, owners}, acc ->
      for owner <- owners,
          owner != me,
          reduce: acc,
          do: (acc -> Map.update(acc, owner, [orphan], &[orphan | &1]))
    end)
  end

  @doc "Whether a side seeing `alive` of `known` members lacks a majority."
  @spec minority?(non_neg_integer(), non_neg_integer()) :: boolean()
  def minority?(alive, known), do: alive < div(known, 2) + 1
end
