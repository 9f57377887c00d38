defmodule Synod.Hub.Tombstones do
  @moduledoc false
  # Stops that hold (docs/hub.md, "Stops"): the rules, pure — the hybrid
  # clock that stamps starts and stops, and whether a tombstone covers an
  # incarnation — and the tombstones themselves, kept in the hub's meta
  # table (so a restarted coordinator keeps them) as
  #
  #   {{:tomb, id}, t, recorded_at_ms, pid | nil}
  #
  # the stamp of the latest stop of `id` this node knows, when it recorded
  # it, and the local copy a tombstone stopped, if any. Only the
  # coordinator writes them.

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

  @doc "The tombstone of `id`: `{t, recorded_at_ms, pid | nil}`, or nil."
  @spec lookup(:ets.tid(), term()) :: {non_neg_integer(), integer(), pid() | nil} | nil
  def lookup(meta, id) do
    case :ets.lookup(meta, {:tomb, id}) do
      [{_, t, at, pid}] -> {t, at, pid}
      [] -> nil
    end
  end

  @doc """
  Records `[{id, t}]` at `now_ms`, keeping the later stamp of each id, and
  for the ids in `stopped` (`%{id => pid | nil}`) the local copy these
  tombstones stopped (nil: none); other ids keep what was recorded.
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
  peer's stop request). When `t` is above `bound` and none of the ids has
  a tombstone yet (the usual first stop of them), they are put whole in
  one table call. When `t` is above `bound` and the first id has a
  tombstone (a re-stop of the same ids), no put whole is tried: each
  tombstone's stamp and time (and copy, for an id in `stopped`) are
  written in place, one table call per id, the missing ones put whole
  after. Otherwise as `record/5` does.
  """
  @spec record_ids(:ets.tid(), [term()], non_neg_integer(), map(), integer(), term()) :: :ok
  def record_ids(meta, ids, t, stopped, now_ms, bound) do
    whole = fn -> for id <- ids, do: {{:tomb, id}, t, now_ms, Map.get(stopped, id)} end

    cond do
      bound == false ->
        :ets.insert(meta, whole.())
        :ok

      not above?(t, bound) ->
        record(meta, for(id <- ids, do: {id, t}), stopped, now_ms, bound)

      not recorded_first?(meta, ids) and :ets.insert_new(meta, whole.()) ->
        :ok

      true ->
        :ets.insert(meta, later_ids(meta, ids, t, stopped, now_ms, [{2, t}, {3, now_ms}], []))
        :ok
    end
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
        %{^id => pid} -> :ets.update_element(meta, key, [{4, pid} | fields])
        _ -> :ets.update_element(meta, key, fields)
      end

    if written,
      do: later_ids(meta, ids, t, stopped, now_ms, fields, acc),
      else:
        later_ids(meta, ids, t, stopped, now_ms, fields, [
          {key, t, now_ms, Map.get(stopped, id)} | acc
        ])
  end

  defp later_ids(_meta, [], _t, _stopped, _now_ms, _fields, acc), do: acc

  defp rows(meta, [{id, t} | rest], stopped, now_ms, false, acc) do
    row = {{:tomb, id}, t, now_ms, Map.get(stopped, id)}
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
        rows(meta, rest, stopped, now_ms, bound, [{key, t, now_ms, Map.get(stopped, id)} | acc])
  end

  defp rows(_meta, [], _stopped, _now_ms, _bound, acc), do: :lists.reverse(acc)

  defp above?(_t, :unknown), do: false
  defp above?(t, bound), do: t > bound

  # The fields a later stamp `t` writes: the stamp and the time, and for
  # an id in `stopped` the copy.
  defp later(id, t, stopped, now_ms) do
    case stopped do
      %{^id => pid} -> [{2, t}, {3, now_ms}, {4, pid}]
      _ -> [{2, t}, {3, now_ms}]
    end
  end

  # Stamp `t` against the tombstone recorded, if any (always written, so
  # true). The stamp is read by a zero increment, which puts the new
  # tombstone whole when there is none; the later stamp is kept, and
  # the time and the copy change when `t` is the later or the id is in
  # `stopped`. Only the fields read or written are touched.
  defp compare(meta, key, id, t, stopped, now_ms) do
    new = {key, t, now_ms, Map.get(stopped, id)}

    case :ets.update_counter(meta, key, {2, 0}, new) do
      old_t when old_t < t ->
        :ets.update_element(meta, key, later(id, t, stopped, now_ms))

      _ when is_map_key(stopped, id) ->
        :ets.update_element(meta, key, [{3, now_ms}, {4, stopped[id]}])

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
