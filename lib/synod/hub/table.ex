defmodule Synod.Hub.Table do
  @moduledoc false
  # The registry table of one node: the one place that reads and writes its
  # rows, for the coordinator (the table's owner, the only writer) and for
  # the read API (Synod, Synod.Hub.Caller) alike. What a change does to a
  # row is decided by Synod.Hub.Registry's pure transitions; this module
  # looks the rows up and stores the results. Rows as in Synod.Hub.Registry:
  # stored with a single copy as the bare pid (Registry.store/1), handed
  # out with the copies as a list (Registry.load/1), so no caller sees the
  # stored form. Rows written with a list (any length) read back the same.

  alias Synod.Hub.{Placement, Registry}
  require Registry

  @doc "The row of `id`, or nil."
  @spec row(:ets.tid(), term()) :: Registry.row() | nil
  def row(registry, id) do
    case :ets.lookup(registry, id) do
      [row] -> Registry.load(row)
      [] -> nil
    end
  end

  @doc "Stores rows (or one row) given with their copies as a list."
  @spec insert(:ets.tid(), Registry.row() | [Registry.row()]) :: true
  def insert(registry, rows) when is_list(rows),
    do: :ets.insert(registry, for(row <- rows, do: Registry.store(row)))

  def insert(registry, row), do: :ets.insert(registry, Registry.store(row))

  @doc "Every row (the whole table copied out)."
  @spec rows(:ets.tid()) :: [Registry.row()]
  def rows(registry), do: for(row <- :ets.tab2list(registry), do: Registry.load(row))

  @doc "`{t, row}` for each `{id, t}` whose id has a row, in order."
  @spec with_rows(:ets.tid(), [{term(), term()}]) :: [{term(), Registry.row()}]
  def with_rows(registry, pairs),
    do: for({id, t} <- pairs, [row] <- [:ets.lookup(registry, id)], do: {t, Registry.load(row)})

  @doc "The copies of `id` (`[]` when none or no row)."
  @spec pids(:ets.tid(), term()) :: [pid()]
  def pids(registry, id) do
    case stored_copies(registry, id) do
      nil -> []
      copies -> Registry.copies(copies)
    end
  end

  @doc "`[{id, [pid]}]` for the ids that have a row."
  @spec locate(:ets.tid(), [term()]) :: [{term(), [pid()]}]
  def locate(registry, ids),
    do: for(id <- ids, copies = stored_copies(registry, id), do: {id, Registry.copies(copies)})

  # The copies of `id`'s row as stored, or nil when it has none. Only that
  # element is read: a compressed row copied out whole (`:ets.lookup/2`)
  # costs two to three times as much. Readers run beside the coordinator,
  # which may delete the row at any moment: a missing row raises, read as
  # nil.
  defp stored_copies(registry, id) do
    :ets.lookup_element(registry, id, 4)
  rescue
    ArgumentError -> nil
  end

  @doc """
  The row of each id in order, its copies only (`{id, nil, nil, [pid]}`),
  or nil: for a stop that deletes the rows it stops, which needs neither
  the spec nor the slot (copied out of the table, they cost most of a
  row's read).
  """
  @spec copy_rows(:ets.tid(), [term()]) :: [tuple() | nil]
  def copy_rows(registry, ids) do
    for id <- ids do
      case stored_copies(registry, id) do
        nil -> nil
        copies -> {id, nil, nil, Registry.copies(copies)}
      end
    end
  end

  @doc """
  A stop request on `node` stopped its copies of `ids`: each row loses its
  copy on `node`, and goes when no copy is left. Returns `{gone, rows}`:
  the copies removed `[{id, pid}]`, and the rows the ids still have, as
  now stored (ids without a row are skipped). The usual row, whose one
  copy is the one on `node`, is seen in its copies alone and deleted
  without being read whole.
  """
  @spec remove_node_copies(:ets.tid(), [term()], node()) :: {[{term(), pid()}], [Registry.row()]}
  def remove_node_copies(registry, ids, node), do: remove_node_copies(registry, ids, node, [], [])

  defp remove_node_copies(registry, [id | ids], node, gone, rows) do
    case stored_copies(registry, id) do
      nil ->
        remove_node_copies(registry, ids, node, gone, rows)

      pid when is_pid(pid) and node(pid) == node ->
        :ets.delete(registry, id)
        remove_node_copies(registry, ids, node, [{id, pid} | gone], rows)

      _other ->
        {gone, rows} = remove_node_copy(registry, id, node, gone, rows)
        remove_node_copies(registry, ids, node, gone, rows)
    end
  end

  defp remove_node_copies(_registry, [], _node, gone, rows),
    do: {:lists.reverse(gone), :lists.reverse(rows)}

  defp remove_node_copy(registry, id, node, gone, rows) do
    case :ets.lookup(registry, id) do
      [stored] ->
        {_, spec, slot, pids} = row = Registry.load(stored)

        case for(p <- pids, node(p) == node, do: p) do
          [] ->
            {gone, [row | rows]}

          [pid | _] ->
            case List.delete(pids, pid) do
              [] ->
                :ets.delete(registry, id)
                {[{id, pid} | gone], rows}

              rest ->
                row = {id, spec, slot, rest}
                insert(registry, row)
                {[{id, pid} | gone], [row | rows]}
            end
        end

      [] ->
        {gone, rows}
    end
  end

  @doc "This node's (`me`) copy of `id`, or nil."
  @spec local_copy(:ets.tid(), term(), node()) :: pid() | nil
  def local_copy(registry, id, me), do: Registry.local_pid(pids(registry, id), me)

  @doc "The children with a copy on `me`, as `{id, spec, slot, pid}`."
  @spec local_entries(:ets.tid(), node()) :: [tuple()]
  def local_entries(registry, me) do
    :ets.foldl(
      fn {id, spec, slot, pids}, acc ->
        case Registry.local_pid(Registry.copies(pids), me) do
          nil -> acc
          pid -> [{id, spec, slot, pid} | acc]
        end
      end,
      [],
      registry
    )
  end

  @doc "Rows with no copy anywhere, as `{id, spec, slot}`."
  @spec orphans(:ets.tid()) :: [tuple()]
  def orphans(registry),
    do: :ets.select(registry, [{{:"$1", :"$2", :"$3", []}, [], [{{:"$1", :"$2", :"$3"}}]}])

  @doc """
  Records each `{id, spec, slot, pid}` as the copy of `id` on the pid's
  node; returns the rows as now stored. Usually every row is new (a batch
  another member just started): then one table call stores them all.
  """
  @spec put_pids(:ets.tid(), [tuple()]) :: [Registry.row()]
  def put_pids(registry, entries) do
    if :ets.insert_new(registry, entries),
      do: for({id, spec, slot, pid} <- entries, do: {id, spec, slot, [pid]}),
      else: for({id, spec, slot, pid} <- entries, do: put_pid(registry, id, spec, slot, pid))
  end

  @doc """
  `put_pids/2` for an announcement: `:new` when every entry was a new row
  (stored in one table call, no rows built), else the rows as now stored.
  """
  @spec put_new_pids(:ets.tid(), [tuple()]) :: :new | [Registry.row()]
  def put_new_pids(registry, entries) do
    if :ets.insert_new(registry, entries),
      do: :new,
      else: for({id, spec, slot, pid} <- entries, do: put_pid(registry, id, spec, slot, pid))
  end

  @doc "Records `pid` as the copy of `id` on its node; returns the new row."
  @spec put_pid(:ets.tid(), term(), term(), Registry.slot(), pid()) :: Registry.row()
  def put_pid(registry, id, spec, slot, pid) do
    row = Registry.put_pid(row(registry, id), id, spec, slot, pid)
    insert(registry, row)
    row
  end

  @doc """
  Removes `pid` from the row of `id`; returns the row as now stored (nil
  when there is none). `reason` :stopped deletes a row left without pids.
  """
  @spec remove_pid(:ets.tid(), term(), pid(), term()) :: Registry.row() | nil
  def remove_pid(registry, id, pid, reason) do
    with row when row != nil <- row(registry, id) do
      case Registry.remove_pid(row, pid, reason) do
        :delete ->
          :ets.delete(registry, id)
          nil

        :unchanged ->
          row

        {:put, row} ->
          insert(registry, row)
          row
      end
    end
  end

  @doc """
  `remove_pid/4` for each `{id, pid}` of `stopped`, in one pass: the rows
  as now stored of the ids that still have one, in order.
  """
  @spec remove_pids(:ets.tid(), [{term(), pid()}], term()) :: [Registry.row()]
  def remove_pids(registry, stopped, reason), do: remove_pids(registry, stopped, reason, [])

  # The usual copy leaving for good is its row's one copy: seen in the
  # copies alone (stored_copies/2), and the row deleted without reading it.
  defp remove_pids(registry, [{id, pid} | rest], reason, acc) do
    if stored_copies(registry, id) == pid and Registry.is_deleting_reason(reason) do
      :ets.delete(registry, id)
      remove_pids(registry, rest, reason, acc)
    else
      remove_row_pid(registry, id, pid, rest, reason, acc)
    end
  end

  defp remove_pids(_registry, [], _reason, acc), do: :lists.reverse(acc)

  defp remove_row_pid(registry, id, pid, rest, reason, acc) do
    case :ets.lookup(registry, id) do
      [row] ->
        case Registry.remove_pid(Registry.load(row), pid, reason) do
          :delete ->
            :ets.delete(registry, id)
            remove_pids(registry, rest, reason, acc)

          :unchanged ->
            remove_pids(registry, rest, reason, [Registry.load(row) | acc])

          {:put, row} ->
            insert(registry, row)
            remove_pids(registry, rest, reason, [row | acc])
        end

      [] ->
        remove_pids(registry, rest, reason, acc)
    end
  end

  @doc "Drops every copy on `node` from the rows."
  @spec drop_node(:ets.tid(), node()) :: true
  def drop_node(registry, node) do
    changed =
      :ets.foldl(
        fn row, acc ->
          case Registry.drop_node(Registry.load(row), node) do
            nil -> acc
            row -> [row | acc]
          end
        end,
        [],
        registry
      )

    insert(registry, changed)
  end

  @doc """
  Node `lost` left: drops its copies from the rows in one pass and returns
  the rows a reconcile must decide, whatever the new ring
  (`Synod.Hub.Placement.after_loss/4`).
  """
  @spec drop_lost(:ets.tid(), node(), node(), pos_integer()) :: [Registry.row()]
  def drop_lost(registry, lost, me, rf) do
    {changed, candidates} = Placement.after_loss(loss_rows(registry, lost, me, rf), lost, me, rf)
    insert(registry, changed)
    candidates
  end

  # With replication factor 1, the rows with one copy on a third node
  # neither change nor are decided (`after_loss/4` would leave them out):
  # the table does not even copy them out.
  defp loss_rows(registry, lost, me, 1) do
    on = fn node -> {:==, {:node, :"$1"}, {:const, node}} end

    selected =
      :ets.select(registry, [
        {{:_, :_, :_, []}, [], [:"$_"]},
        {{:_, :_, :_, :"$1"}, [{:is_pid, :"$1"}, {:orelse, on.(lost), on.(me)}], [:"$_"]},
        {{:_, :_, :_, [:"$1"]}, [{:orelse, on.(lost), on.(me)}], [:"$_"]},
        {{:_, :_, :_, [:_, :_ | :_]}, [], [:"$_"]}
      ])

    for row <- selected, do: Registry.load(row)
  end

  defp loss_rows(registry, _lost, _me, _rf), do: rows(registry)

  @doc "Adds a row without a copy for each orphan that has none; returns the rows added."
  @spec add_orphans(:ets.tid(), [tuple()]) :: [Registry.row()]
  def add_orphans(registry, orphans) do
    for {id, spec, slot} <- orphans,
        :ets.insert_new(registry, {id, spec, slot, []}),
        do: {id, spec, slot, []}
  end

  @doc """
  A peer `from` sent its full picture (`announced`: `%{id => pid}`): the
  rows naming a copy on `from` that it no longer runs, without it
  (`stale`), and the ids whose copy there this node knew already (`known`).
  """
  @spec against_sync(:ets.tid(), node(), map()) :: {[Registry.row()], [term()]}
  def against_sync(registry, from, announced) do
    :ets.foldl(
      fn row, {stale, known} ->
        case Registry.against_sync(Registry.load(row), from, announced) do
          :none -> {stale, known}
          :known -> {stale, [elem(row, 0) | known]}
          {:stale, row} -> {[row | stale], known}
        end
      end,
      {[], []},
      registry
    )
  end

  # ── the read API's views (Synod.children/2, Synod.tagged/2) ─────────────

  @doc "Every child with a copy, as `{id, [{node, pid}]}`."
  @spec running(:ets.tid()) :: [{term(), [{node(), pid()}]}]
  def running(registry) do
    for {id, _, _, pids} <- :ets.tab2list(registry),
        pids != [],
        do: {id, for(pid <- Registry.copies(pids), do: {node(pid), pid})}
  end

  @doc "The children with a copy on `me`, as `{id, pid}`."
  @spec local_children(:ets.tid(), node()) :: [{term(), pid()}]
  def local_children(registry, me) do
    :ets.foldl(
      fn {id, _, _, pids}, acc ->
        case Registry.local_pid(Registry.copies(pids), me) do
          nil -> acc
          pid -> [{id, pid} | acc]
        end
      end,
      [],
      registry
    )
  end

  @doc "The children with a copy started with `metadata: %{tag: tag}`, as `{id, [{node, pid}]}`."
  @spec tagged(:ets.tid(), term()) :: [{term(), [{node(), pid()}]}]
  def tagged(registry, tag) do
    for {id, pids} <- :ets.select(registry, Registry.tagged(tag)),
        pids != [],
        do: {id, for(pid <- Registry.copies(pids), do: {node(pid), pid})}
  end
end
