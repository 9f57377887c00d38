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
  (false: there is none; `:unknown`: not known). A stamp above it is the
  later one of its id for sure, so it is written without reading the
  tombstone it replaces: put whole for the ids in `stopped` and when there
  is no tombstone at all, else its stamp and time updated in place (the
  recorded copy kept), or put when none was there. Other stamps are put
  when their id has none, else compared with the one recorded, as
  `record/4` does, reading and writing only the fields that change. (A peer's stop
  announcement and a stop request here always carry a stamp above the
  bound: the clock has seen every recorded stamp.)
  """
  @spec record(:ets.tid(), [{term(), non_neg_integer()}], map(), integer(), term()) :: :ok
  def record(meta, tombstones, stopped, now_ms, bound) do
    :ets.insert(meta, rows(meta, tombstones, stopped, now_ms, bound, []))
    :ok
  end

  defp rows(meta, [{id, t} | rest], stopped, now_ms, bound, acc) do
    cond do
      bound == false or (is_map_key(stopped, id) and above?(t, bound)) ->
        row = {{:tomb, id}, t, now_ms, Map.get(stopped, id)}
        rows(meta, rest, stopped, now_ms, bound, [row | acc])

      above?(t, bound) ->
        if :ets.update_element(meta, {:tomb, id}, [{2, t}, {3, now_ms}]),
          do: rows(meta, rest, stopped, now_ms, bound, acc),
          else: rows(meta, rest, stopped, now_ms, bound, [{{:tomb, id}, t, now_ms, nil} | acc])

      :ets.insert_new(meta, {{:tomb, id}, t, now_ms, Map.get(stopped, id)}) ->
        rows(meta, rest, stopped, now_ms, bound, acc)

      true ->
        compare(meta, {:tomb, id}, t, stopped, now_ms)
        rows(meta, rest, stopped, now_ms, bound, acc)
    end
  end

  defp rows(_meta, [], _stopped, _now_ms, _bound, acc), do: :lists.reverse(acc)

  defp above?(_t, :unknown), do: false
  defp above?(t, bound), do: t > bound

  # Stamp `t` of the id of `key` against the tombstone recorded: the later
  # stamp is kept, the time and the copy change when `t` is the later or
  # the id is in `stopped`. Only the fields read or written are touched.
  defp compare(meta, {:tomb, id} = key, t, stopped, now_ms) do
    old_t = :ets.lookup_element(meta, key, 2)

    changes =
      case stopped do
        %{^id => pid} -> [{2, max(t, old_t)}, {3, now_ms}, {4, pid}]
        _ when old_t < t -> [{2, t}, {3, now_ms}]
        _ -> []
      end

    changes == [] or :ets.update_element(meta, key, changes)
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
