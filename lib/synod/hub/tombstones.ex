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
  def record(meta, tombstones, stopped, now_ms) do
    rows =
      for {id, t} <- tombstones,
          old <- [lookup(meta, id)],
          old == nil or elem(old, 0) < t or is_map_key(stopped, id) do
        {old_t, old_pid} = if old, do: {elem(old, 0), elem(old, 2)}, else: {t, nil}
        {{:tomb, id}, max(t, old_t), now_ms, Map.get(stopped, id, old_pid)}
      end

    :ets.insert(meta, rows)
    :ok
  end

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
