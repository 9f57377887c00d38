defmodule Synod.Hub.Registry do
  @moduledoc false
  # Pure: the registry row's format, the one place that knows it, and the
  # functions over rows that are not placement (Synod.Hub.Placement). A row, on
  # every member:
  #
  #   {child_id, spec, slot, [pid]}   — one pid per member running a copy
  #
  # Stored in the table (Synod.Hub.Table, the only reader and writer of
  # the table) with a single copy as the bare pid, `{child_id, spec, slot,
  # pid}`: in a compressed table that is 24 bytes less per row than the
  # one-element list (152 against 176 bytes per child for the bench's
  # children; docs/hub.md, "Performance"). `store/1` and `load/1` convert;
  # every function here and in Placement sees rows with a pid list.
  #
  # `slot` holds the user's metadata and the child's incarnation together,
  # as `nil | map` (incarnation 0), `inc` (no metadata) or `{inc, map}`: in
  # the registry's compressed rows that costs no more than the metadata
  # alone, where a fifth element would cost a word per row. The same slot
  # travels as the `Meta` of start entries and registry changes between
  # members (docs/protocol.md), so a child keeps its incarnation through
  # restarts, moves and redistribution.
  #
  # The incarnation is the hybrid-clock stamp (µs) of the request that
  # started the child; a stop records a tombstone with a later stamp, and
  # a copy, row or announcement whose incarnation is not above a tombstone
  # of its id is a stopped child (docs/hub.md, "Stops").

  @type slot :: nil | map() | non_neg_integer() | {non_neg_integer(), map()}

  @doc "A row as the table stores it (a single copy as the bare pid)."
  @spec store(tuple()) :: tuple()
  def store({id, spec, slot, [pid]}), do: {id, spec, slot, pid}
  def store(row), do: row

  @doc "A stored row as the functions over rows see it (the copies as a list)."
  @spec load(tuple()) :: tuple()
  def load({id, spec, slot, pid}) when is_pid(pid), do: {id, spec, slot, [pid]}
  def load(row), do: row

  @doc "The copies of a stored row's last element, as a list."
  @spec copies(pid() | [pid()]) :: [pid()]
  def copies(pid) when is_pid(pid), do: [pid]
  def copies(pids), do: pids

  @doc "The slot for `meta` (nil or a map) and incarnation `inc`."
  @spec slot(nil | map(), non_neg_integer()) :: slot()
  def slot(meta, 0), do: meta
  def slot(nil, inc), do: inc
  def slot(meta, inc), do: {inc, meta}

  @doc "The user's metadata in a slot."
  @spec meta(slot()) :: nil | map()
  def meta({_inc, meta}), do: meta
  def meta(inc) when is_integer(inc), do: nil
  def meta(meta), do: meta

  @doc "The incarnation in a slot (0: none known)."
  @spec inc(slot()) :: non_neg_integer()
  def inc({inc, _meta}), do: inc
  def inc(inc) when is_integer(inc), do: inc
  def inc(_meta), do: 0

  @doc "The slot with incarnation `inc` and the same metadata."
  @spec with_inc(slot(), non_neg_integer()) :: slot()
  def with_inc(slot, inc), do: slot(meta(slot), inc)

  @doc "Whether a term is a slot (what a member checks in a message)."
  @spec slot?(term()) :: boolean()
  def slot?({inc, meta}), do: is_integer(inc) and inc >= 0 and is_map(meta)
  def slot?(inc) when is_integer(inc), do: inc >= 0
  def slot?(meta), do: meta == nil or is_map(meta)

  @doc "This node's pid in a row's pid list, or nil."
  @spec local_pid([pid()], node()) :: pid() | nil
  def local_pid([pid | _], me) when node(pid) == me, do: pid
  def local_pid([_ | pids], me), do: local_pid(pids, me)
  def local_pid([], _me), do: nil

  @doc """
  What a restarted coordinator writes back (docs/hub.md, "A coordinator
  crash keeps the children"): given the rows it inherited and the children
  `[{id, pid, spec}]` that run on `me` now, the rows to store — those whose
  copy on `me` changed (another pid, or gone), and a new row for each child
  with none (its metadata unknown).
  """
  @spec adopt([tuple()], node(), [{term(), pid(), term()}]) :: [tuple()]
  def adopt(rows, me, running) do
    running = Map.new(running, fn {id, pid, spec} -> {id, {pid, spec}} end)

    {changed, seen} =
      Enum.reduce(rows, {[], []}, fn {id, spec, slot, pids}, {changed, seen} ->
        mine = local_pid(pids, me)

        case running do
          %{^id => {^mine, _}} ->
            {changed, [id | seen]}

          %{^id => {pid, _}} ->
            {[{id, spec, slot, [pid | List.delete(pids, mine)]} | changed], [id | seen]}

          _ when mine == nil ->
            {changed, seen}

          _ ->
            {[{id, spec, slot, List.delete(pids, mine)} | changed], seen}
        end
      end)

    changed ++ for({id, {pid, spec}} <- Map.drop(running, seen), do: {id, spec, nil, [pid]})
  end

  # ── row transitions (the coordinator reads and writes the table) ────────

  @type row :: {term(), term(), slot(), [pid()]}

  @doc "The row once `pid` is the copy of `id` on its node (`row`: the row now, or nil)."
  @spec put_pid(row() | nil, term(), term(), slot(), pid()) :: row()
  def put_pid(nil, id, spec, slot, pid), do: {id, spec, slot, [pid]}

  def put_pid({_, _, _, pids}, id, spec, slot, pid) do
    node = node(pid)
    {id, spec, slot, [pid | Enum.reject(pids, &(node(&1) == node))]}
  end

  @doc """
  Whether a row goes with its last copy when that copy leaves for
  `reason`: an exit (`:stopped`) or a stop request (`{:stopped, t}`) takes
  it along; a move or a suspension leaves it without a copy. (A guard.)
  """
  defguard is_deleting_reason(reason)
           when reason == :stopped or
                  (is_tuple(reason) and tuple_size(reason) == 2 and elem(reason, 0) == :stopped)

  @doc """
  What becomes of `row` once its copy `pid` is gone: `:delete` (the last
  copy of a child that exited, `reason` :stopped, or was stopped by a stop
  request, `{:stopped, t}`), `:unchanged` (no such copy), or `{:put, row}`.
  (A stop request's row would go anyway, with its tombstone: deleting it
  here spares a write and a lookup per child on every member.)
  """
  @spec remove_pid(row(), pid(), term()) :: :delete | :unchanged | {:put, row()}
  def remove_pid({id, spec, slot, pids}, pid, reason) do
    case List.delete(pids, pid) do
      [] when is_deleting_reason(reason) -> :delete
      ^pids -> :unchanged
      rest -> {:put, {id, spec, slot, rest}}
    end
  end

  @doc "`row` without its copy on `node`, or nil when it had none there."
  @spec drop_node(row(), node()) :: row() | nil
  def drop_node({id, spec, slot, pids}, node) do
    case Enum.reject(pids, &(node(&1) == node)) do
      ^pids -> nil
      rest -> {id, spec, slot, rest}
    end
  end

  @doc "`row` with its copy `old` replaced by `new` (a local restart)."
  @spec replace_pid(row(), pid(), pid()) :: row()
  def replace_pid({id, spec, slot, pids}, old, new),
    do: {id, spec, slot, [new | List.delete(pids, old)]}

  @doc """
  A peer `from` sent its full picture, `announced` (`%{id => pid}` of what
  runs there): what it says about `row` — `:none` (no copy on `from`),
  `:known` (the same copy), or `{:stale, row}` (the row without the copy
  `from` no longer runs).
  """
  @spec against_sync(row(), node(), map()) :: :none | :known | {:stale, row()}
  def against_sync({id, spec, slot, pids}, from, announced) do
    case Enum.find(pids, &(node(&1) == from)) do
      nil -> :none
      pid when :erlang.map_get(id, announced) == pid -> :known
      pid -> {:stale, {id, spec, slot, List.delete(pids, pid)}}
    end
  end

  @doc """
  What a start of entry `{id, spec, slot, mode}` does on `me`, given the
  row of `id` (or nil), the stamp of its latest stop (`stopped`, nil when
  none), the request's kind (`:client`: a new incarnation stamped `now`
  unless the caller's is above the stop; `:member`: a move, keeping its
  incarnation, refused when stopped):
  `{:stopped, id}`, `{:running, id, pid}`, or `{:start, id, spec, slot,
  mode, other_pids}`.
  """
  @spec start_step(:client | :member, tuple(), row() | nil, node(), integer() | nil, integer()) ::
          tuple()
  def start_step(kind, {id, spec, slot, mode}, row, me, stopped, now) do
    inc = inc(slot)
    others = if row, do: elem(row, 3), else: []

    cond do
      kind == :member and Synod.Hub.Tombstones.covers?(stopped, inc) ->
        {:stopped, id}

      local_pid(others, me) != nil ->
        {:running, id, local_pid(others, me)}

      kind == :client and (inc == 0 or Synod.Hub.Tombstones.covers?(stopped, inc)) ->
        {:start, id, spec, with_inc(slot, now), mode, others}

      true ->
        {:start, id, spec, slot, mode, others}
    end
  end

  @doc """
  What a stop of `id` on `me` does, given its row (or nil): `{:absent, id}`
  or `{:stop, id, spec, slot, pid, other_pids}`.
  """
  @spec stop_step(term(), row() | nil, node()) :: tuple()
  def stop_step(id, nil, _me), do: {:absent, id}

  def stop_step(id, {_, spec, slot, pids}, me) do
    case local_pid(pids, me) do
      nil -> {:absent, id}
      pid -> {:stop, id, spec, slot, pid, List.delete(pids, pid)}
    end
  end

  @doc """
  Whether a row keeps standing once a local copy stopped for `reason`,
  `rest` being its other copies: a stop request (`{:stopped, t}`) deletes
  it, an exit (`:stopped`) once no copy is left; a move or a suspension
  keeps it (the child must run again somewhere).
  """
  @spec keep_row?(term(), [pid()]) :: boolean()
  def keep_row?({:stopped, _t}, _rest), do: false
  def keep_row?(:stopped, rest), do: rest != []
  def keep_row?(_moving, _rest), do: true

  @doc "Match specs selecting `{child_id, pids}` of the rows tagged `tag` (`pids` as stored: see `copies/1`)."
  @spec tagged(term()) :: :ets.match_spec()
  def tagged(tag) do
    for slot <- [%{tag: tag}, {:_, %{tag: tag}}],
        do: {{:"$1", :_, slot, :"$2"}, [], [{{:"$1", :"$2"}}]}
  end
end
