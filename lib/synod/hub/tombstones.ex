defmodule Synod.Hub.Tombstones do
  @moduledoc false
  # Stops that hold (docs/hub.md, "Stops"): the rules, pure — the hybrid
  # clock that stamps starts and stops, and whether a tombstone covers an
  # incarnation — and the tombstones themselves, kept in the hub's meta
  # table (so a restarted coordinator keeps them) as
  #
  #   {{:tomb, id}, t, recorded_at_ms, nil | {pid, stopped_at_ms}}
  #
  # the stamp of the latest stop of `id` this node knows, when it recorded
  # it, and the local copy a tombstone stopped, if any, with when it
  # stopped it: a later stamp of the id moves `recorded_at_ms` (the sweep
  # keeps a tombstone 60 s from its latest stamp) but not the copy's time,
  # which is what a raced stop request's answer is decided by
  # (`Requests.raced/4`). Only the coordinator writes them.

  # ── the rules ────────────────────────────────────────────────────────────

  @doc """
  The next stamp of a hybrid clock at `clock` when the wall clock reads
  `now_us`: microseconds, never backwards, past every stamp seen.
  """
  @spec tick(non_neg_integer(), integer()) :: {non_neg_integer(), non_neg_integer()}
  def tick(clock, now_us) do
    t = max(now_us, clock + 1)
    {t, t}
  end

  @doc "The clock after seeing stamp `t` from elsewhere."
  @spec observe(non_neg_integer(), non_neg_integer()) :: non_neg_integer()
  def observe(clock, t), do: max(clock, t)

  @doc "Whether a stop stamped `t` (nil: none known) covers incarnation `inc`."
  @spec covers?(non_neg_integer() | nil, non_neg_integer()) :: boolean()
  def covers?(nil, _inc), do: false
  def covers?(t, inc), do: inc <= t

  # Tombstones are dropped once this old (ms since they were recorded).
  @keep 60_000

  @doc """
  The sweep at monotonic time `now_ms`: the tombstones recorded before the
  returned time go, or none (nil) unless every member this node has known
  is connected and none is awaited (`complete?`, `Membership.complete?/3`):
  a member cut off may still hold a copy or a row that its tombstone must
  meet when it comes back.
  """
  @spec sweep_cutoff(boolean(), integer()) :: integer() | nil
  def sweep_cutoff(false = _complete?, _now_ms), do: nil
  def sweep_cutoff(true, now_ms), do: now_ms - @keep

  @doc """
  The stamp no tombstone is above among `[{id, t}]` (false: there is
  none), what a restarted coordinator finds in the meta table: an
  incarnation above it is stopped by none.
  """
  @spec bound([{term(), non_neg_integer()}]) :: non_neg_integer() | false
  def bound([]), do: false
  def bound(tombstones), do: tombstones |> Enum.map(&elem(&1, 1)) |> Enum.max()

  # ── the table ────────────────────────────────────────────────────────────

  # How long a copy a tombstone stopped here answers a stop request that
  # found no copy (ms): `Requests.raced/4`'s window.
  @copy_window 5_000

  @doc "How long (ms) a recorded copy counts for a stop request that raced its tombstone."
  @spec copy_window() :: pos_integer()
  def copy_window, do: @copy_window

  @doc """
  The tombstone of `id`: `{t, recorded_at_ms, copy}` (`copy`: nil, or
  `{pid, stopped_at_ms}`, the local copy a tombstone of `id` stopped), or
  nil.
  """
  @spec lookup(:ets.tid(), term()) ::
          {non_neg_integer(), integer(), nil | {pid(), integer()}} | nil
  def lookup(meta, id) do
    case :ets.lookup(meta, {:tomb, id}) do
      [{_, t, at, copy}] -> {t, at, copy}
      [] -> nil
    end
  end

  # The copy field written for `pid` (nil: none) stopped at `now_ms`.
  defp copy(nil, _now_ms), do: nil
  defp copy(pid, now_ms), do: {pid, now_ms}

  @doc """
  Records `[{id, t}]` at `now_ms`, keeping the later stamp of each id, and
  for the ids in `stopped` (`%{id => pid | nil}`) the local copy these
  tombstones stopped (nil: none), as `{pid, now_ms}`; other ids keep the
  copy that was recorded, with its time.
  """
  @spec record(:ets.tid(), [{term(), non_neg_integer()}], map(), integer()) :: :ok
  def record(meta, tombstones, stopped, now_ms),
    do: record(meta, tombstones, stopped, now_ms, :unknown)

  @doc """
  `record/4`, given `bound`: a stamp no tombstone in `meta` is above
  (false: there is none; `:unknown`: not known). With no tombstone at all
  every one is put whole, in one table call. A stamp above the bound is
  the later one of its id for sure: its fields are written in place
  without reading the tombstone they replace (or it is put when there was
  none). Any other stamp is compared with the recorded one, reading and
  writing only the fields that change. (A stop request here, stamped by
  this node's clock, which has seen every recorded stamp, is always above
  the bound; a peer's stop stamped a moment before this node's own is not.)
  """
  @spec record(:ets.tid(), [{term(), non_neg_integer()}], map(), integer(), term()) :: :ok
  def record(meta, tombstones, stopped, now_ms, bound) do
    :ets.insert(meta, rows(meta, tombstones, stopped, now_ms, bound, []))
    :ok
  end

  @doc """
  A stop request stamped `t` by this node's clock (so above `bound`,
  which is `record/5`'s): a tombstone `{t, now_ms, nil}` for each of
  `ids`, put whole in one table call. The result is `record/5`'s with
  every id in `stopped` as nil; a `t` not above `bound` takes that path.
  """
  @spec record_stop(:ets.tid(), [term()], non_neg_integer(), integer(), term()) :: :ok
  def record_stop(meta, ids, t, now_ms, bound) do
    if bound == false or above?(t, bound) do
      :ets.insert(meta, for(id <- ids, do: {{:tomb, id}, t, now_ms, nil}))
      :ok
    else
      record(meta, for(id <- ids, do: {id, t}), Map.new(ids, &{&1, nil}), now_ms, bound)
    end
  end

  @doc """
  `record/5` for a tombstone `{id, t}` of each of `ids` (one stamp: a
  peer's stop request), given `copies`: whether any tombstone in `meta`
  may hold a copy (false: none does; the shell keeps it, see
  `clear_copies/2`). When `t` is above `bound` and no tombstone holds a
  copy, the later stamp replaces whatever each id had: they are put whole
  in one table call (a first stop of the ids and a re-stop of them
  alike). When `t` is above `bound` and none of the ids has a tombstone
  yet, the same, by one `insert_new`. When `t` is above `bound` and the
  first id has a tombstone (a re-stop of the same ids) while copies may
  be recorded, each tombstone's stamp and time (and copy, for an id in
  `stopped`) are written in place, one table call per id, the missing
  ones put whole after. Otherwise as `record/5` does.
  """
  @spec record_ids(:ets.tid(), [term()], non_neg_integer(), map(), integer(), term(), boolean()) ::
          :ok
  def record_ids(meta, ids, t, stopped, now_ms, bound, copies) do
    whole = fn -> whole(ids, t, now_ms, stopped) end

    cond do
      bound == false ->
        :ets.insert(meta, whole.())
        :ok

      not above?(t, bound) ->
        record(meta, for(id <- ids, do: {id, t}), stopped, now_ms, bound)

      not copies ->
        :ets.insert(meta, whole.())
        :ok

      not recorded_first?(meta, ids) and :ets.insert_new(meta, whole.()) ->
        :ok

      true ->
        :ets.insert(meta, later_ids(meta, ids, t, stopped, now_ms, [{2, t}, {3, now_ms}], []))
        :ok
    end
  end

  # The whole tombstones `{id, t}` of `ids` at `now_ms` (no map lookup when
  # nothing was stopped here, the usual peer's stop).
  defp whole(ids, t, now_ms, stopped) when stopped == %{},
    do: for(id <- ids, do: {{:tomb, id}, t, now_ms, nil})

  defp whole(ids, t, now_ms, stopped),
    do: for(id <- ids, do: {{:tomb, id}, t, now_ms, copy(Map.get(stopped, id), now_ms)})

  @doc """
  Forgets the copies recorded before `cutoff_ms` (a copy that old answers
  no stop request: `copy_window/0`), keeping the tombstones. Returns how
  many were forgotten.
  """
  @spec clear_copies(:ets.tid(), integer()) :: non_neg_integer()
  def clear_copies(meta, cutoff_ms) do
    :ets.select_replace(meta, [
      {{{:tomb, :"$1"}, :"$2", :"$3", {:_, :"$4"}}, [{:<, :"$4", cutoff_ms}],
       [{{{{:tomb, :"$1"}}, :"$2", :"$3", nil}}]}
    ])
  end

  @doc """
  The copies' sweep at `now_ms`, given `copies` (false: no tombstone holds
  a copy; else the time the latest copy was recorded): nil when there is
  nothing to forget, else `{cutoff_ms, copies}`: the copies recorded
  before `cutoff_ms` go (`clear_copies/2`), and `copies` as it is after
  (false once the latest is past the window).
  """
  @spec copies_sweep(false | integer(), integer()) :: nil | {integer(), false | integer()}
  def copies_sweep(false, _now_ms), do: nil

  def copies_sweep(latest, now_ms) do
    cutoff = now_ms - @copy_window
    {cutoff, if(latest < cutoff, do: false, else: latest)}
  end

  @doc "`copies` after recording `stopped` (`%{id => pid | nil}`) at `now_ms`."
  @spec copies_after(false | integer(), map(), integer()) :: false | integer()
  def copies_after(copies, stopped, _now_ms) when stopped == %{}, do: copies

  def copies_after(copies, stopped, now_ms) do
    if Enum.any?(stopped, fn {_, pid} -> pid != nil end), do: now_ms, else: copies
  end

  defp recorded_first?(meta, [id | _]), do: :ets.member(meta, {:tomb, id})
  defp recorded_first?(_meta, []), do: false

  # A stamp `t` above every recorded one, for each of `ids`: written in
  # place (`fields`: the stamp and the time, built once; an id in
  # `stopped` also writes its copy), the ids with no tombstone returned
  # as whole rows to put.
  defp later_ids(meta, [id | ids], t, stopped, now_ms, fields, acc) do
    key = {:tomb, id}

    written =
      case stopped do
        %{^id => pid} -> :ets.update_element(meta, key, [{4, copy(pid, now_ms)} | fields])
        _ -> :ets.update_element(meta, key, fields)
      end

    if written,
      do: later_ids(meta, ids, t, stopped, now_ms, fields, acc),
      else:
        later_ids(meta, ids, t, stopped, now_ms, fields, [
          {key, t, now_ms, copy(Map.get(stopped, id), now_ms)} | acc
        ])
  end

  defp later_ids(_meta, [], _t, _stopped, _now_ms, _fields, acc), do: acc

  defp rows(meta, [{id, t} | rest], stopped, now_ms, false, acc) do
    row = {{:tomb, id}, t, now_ms, copy(Map.get(stopped, id), now_ms)}
    rows(meta, rest, stopped, now_ms, false, [row | acc])
  end

  defp rows(meta, [{id, t} | rest], stopped, now_ms, bound, acc) do
    key = {:tomb, id}

    written =
      if above?(t, bound),
        do: :ets.update_element(meta, key, later(id, t, stopped, now_ms)),
        else: compare(meta, key, id, t, stopped, now_ms)

    if written,
      do: rows(meta, rest, stopped, now_ms, bound, acc),
      else:
        rows(meta, rest, stopped, now_ms, bound, [
          {key, t, now_ms, copy(Map.get(stopped, id), now_ms)} | acc
        ])
  end

  defp rows(_meta, [], _stopped, _now_ms, _bound, acc), do: :lists.reverse(acc)

  defp above?(_t, :unknown), do: false
  defp above?(t, bound), do: t > bound

  # The fields a later stamp `t` writes: the stamp and the time, and for
  # an id in `stopped` the copy.
  defp later(id, t, stopped, now_ms) do
    case stopped do
      %{^id => pid} -> [{2, t}, {3, now_ms}, {4, copy(pid, now_ms)}]
      _ -> [{2, t}, {3, now_ms}]
    end
  end

  # Stamp `t` against the tombstone recorded, if any (always written, so
  # true). The stamp is read by a zero increment, which puts the new
  # tombstone whole when there is none; the later stamp is kept, and
  # the time and the copy change when `t` is the later or the id is in
  # `stopped`. Only the fields read or written are touched.
  defp compare(meta, key, id, t, stopped, now_ms) do
    new = {key, t, now_ms, copy(Map.get(stopped, id), now_ms)}

    case :ets.update_counter(meta, key, {2, 0}, new) do
      old_t when old_t < t ->
        :ets.update_element(meta, key, later(id, t, stopped, now_ms))

      _ when is_map_key(stopped, id) ->
        :ets.update_element(meta, key, [{3, now_ms}, {4, copy(stopped[id], now_ms)}])

      _ ->
        true
    end
  end

  @doc "The latest stamp of `[{id, t}]` (0 for none)."
  @spec newest([{term(), non_neg_integer()}]) :: non_neg_integer()
  def newest(tombstones), do: newest(tombstones, 0)

  defp newest([{_, t} | rest], acc) when t > acc, do: newest(rest, t)
  defp newest([_ | rest], acc), do: newest(rest, acc)
  defp newest([], acc), do: acc

  @doc "Every tombstone as `{id, t}`."
  @spec all(:ets.tid()) :: [{term(), non_neg_integer()}]
  def all(meta),
    do: :ets.select(meta, [{{{:tomb, :"$1"}, :"$2", :_, :_}, [], [{{:"$1", :"$2"}}]}])

  @doc "Whether there is any tombstone."
  @spec any?(:ets.tid()) :: boolean()
  def any?(meta),
    do: :ets.select(meta, [{{{:tomb, :_}, :_, :_, :_}, [], [true]}], 1) != :"$end_of_table"

  @doc "Drops the tombstones recorded before `cutoff_ms`."
  @spec sweep(:ets.tid(), integer()) :: non_neg_integer()
  def sweep(meta, cutoff_ms),
    do:
      :ets.select_delete(meta, [{{{:tomb, :_}, :_, :"$1", :_}, [{:<, :"$1", cutoff_ms}], [true]}])
end
