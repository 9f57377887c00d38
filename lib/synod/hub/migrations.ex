defmodule Synod.Hub.Migrations do
  @moduledoc false
  # Pure: the moves this node started, from the start it sent to the new
  # owner until the move is answered, handed over, timed out, or given up
  # because its target left. Each transition returns the new books and the
  # effects for the coordinator to carry out (Synod.Hub.Perform.perform/2):
  #
  #   {:stop_local, ids, :migrating}   stop these local copies, keep their rows
  #   {:send_start, target, ref, entries}  ask `target` to start the entries
  #                                    (a member's start: `migration: true`)
  #   {:timer, ms, message}            send `message` to the coordinator later
  #   {:handover, ref, target, moved}  copy each old copy's state into its
  #                                    successor, outside the coordinator
  #   {:broadcast, message}            to every peer's coordinator
  #   {:event, id, data}               a hub event (Synod.Hub.Events)
  #   {:log, :warning, text}
  #   :resume_events                   the last move ended: the event queue runs
  #
  # A move's plan comes from the migration strategy (Synod.Hub.MigrationStrategy):
  # :stop_then_start (cold), :start_then_stop, :start_then_handover (hot).
  # The children of a move whose old copies still run (the two start-first
  # plans) are `migrating` until the move ends: reconcile leaves them alone.
  # No I/O, no clock: refs and the old copies' pids come in as arguments.

  @timeout 30_000

  defstruct moves: %{}, migrating: MapSet.new()

  @type t :: %__MODULE__{moves: %{reference() => map()}, migrating: MapSet.t()}
  @type effect :: tuple() | :resume_events

  @doc "No moves."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "Whether a move is in flight (the event queue is paused exactly then)."
  @spec paused?(t()) :: boolean()
  def paused?(%__MODULE__{moves: moves}), do: moves != %{}

  @doc "The ids of children whose old copies run while they move."
  @spec migrating(t()) :: MapSet.t()
  def migrating(%__MODULE__{migrating: migrating}), do: migrating

  @doc """
  Starts move `ref` of `entries` (`{id, spec, slot, mode}`, the mode on
  `target`) to `target` under `plan`; `old` maps each id to its local copy
  (for the handover).
  """
  @spec begin(t(), reference(), Synod.Hub.MigrationStrategy.plan(), node(), [tuple()], map()) ::
          {t(), [effect()]}
  def begin(m, ref, plan, target, entries, old) do
    ids = for {id, _, _, _} <- entries, do: id
    move = %{plan: plan, ids: ids, target: target, old: old, answered: false}
    start = {:send_start, target, ref, entries}
    timer = {:timer, @timeout, {:synod_migration_timeout, ref}}
    m = %{m | moves: Map.put(m.moves, ref, move)}

    case plan do
      :stop_then_start ->
        {m, [{:stop_local, ids, :migrating}, start, timer]}

      _start_first ->
        {%{m | migrating: Enum.into(ids, m.migrating)}, [start, timer]}
    end
  end

  @doc """
  `target` answered move `ref` with `results` (`[{id, {:ok, pid} | {:error,
  reason}}]`), `me` being this node. A move answered twice, or an answer
  to no move, changes nothing.
  """
  @spec answered(t(), reference(), node(), [{term(), term()}], node()) :: {t(), [effect()]}
  def answered(m, ref, target, results, me) do
    case m.moves do
      %{^ref => %{answered: false, target: ^target} = move} ->
        failed = failed(me, target, results)

        case move.plan do
          :stop_then_start ->
            moved = for {id, {:ok, pid}} <- results, do: {id, pid}
            m = %{m | moves: Map.delete(m.moves, ref)}
            {m, failed ++ migrated(me, target, moved) ++ resume(m)}

          :start_then_stop ->
            moved = moved(results, move.old)
            {m, effects} = handed_over(m, ref, target, moved, me)
            {m, failed ++ effects}

          :start_then_handover ->
            moved = moved(results, move.old)
            m = %{m | moves: Map.put(m.moves, ref, %{move | answered: true})}
            {m, failed ++ [{:handover, ref, target, moved}]}
        end

      _ ->
        {m, []}
    end
  end

  @doc """
  The new copies of move `ref` run on `target` (`moved`: `[{id, old_pid,
  new_pid}]`), their state handed over: the old copies stop, the move ends.
  Children the target failed to start stay here; reconcile decides again.
  """
  @spec handed_over(t(), reference(), node(), [{term(), pid(), pid()}], node()) ::
          {t(), [effect()]}
  def handed_over(m, ref, target, moved, me) do
    case finish(m, ref) do
      {nil, m} ->
        {m, []}

      {_move, m} ->
        old_ids = for {id, _old, _new} <- moved, do: id
        migrated = migrated(me, target, for({id, _old, new} <- moved, do: {id, new}))
        {m, [{:stop_local, old_ids, :migrating} | migrated] ++ resume(m)}
    end
  end

  @doc "Move `ref` got no answer in time: given up, its children decided again."
  @spec timed_out(t(), reference()) :: {t(), [effect()]}
  def timed_out(m, ref) do
    case finish(m, ref) do
      {nil, m} ->
        {m, []}

      {move, m} ->
        text = "a migration of #{length(move.ids)} children#{to(move)} got no answer"
        {m, [{:log, :warning, text} | resume(m)]}
    end
  end

  @doc """
  `node` left: the moves to it are given up at once (not at their timeout),
  so the event queue resumes and their children are decided again.
  """
  @spec cancel_to(t(), node()) :: {t(), [effect()]}
  def cancel_to(m, node) do
    case Enum.filter(m.moves, fn {_, move} -> Map.get(move, :target) == node end) do
      [] ->
        {m, []}

      gone ->
        m =
          Enum.reduce(gone, m, fn {ref, _}, m ->
            {_, m} = finish(m, ref)
            m
          end)

        {m, resume(m)}
    end
  end

  defp finish(m, ref) do
    case Map.pop(m.moves, ref) do
      {nil, _} ->
        {nil, m}

      {move, moves} ->
        {move,
         %{
           m
           | moves: moves,
             migrating: Enum.reduce(move.ids, m.migrating, &MapSet.delete(&2, &1))
         }}
    end
  end

  # The old copy of each child the target started (a copy that went away
  # meanwhile is nil: its handover fails, logged, and its stop finds nothing).
  defp moved(results, old),
    do:
      for({id, {:ok, pid}} <- results, Map.has_key?(old, id), do: {id, Map.fetch!(old, id), pid})

  defp to(%{target: target}), do: " to #{target}"
  defp to(_move), do: ""

  defp resume(%__MODULE__{moves: moves}) when moves == %{}, do: [:resume_events]
  defp resume(_m), do: []

  defp migrated(_me, _target, []), do: []

  defp migrated(me, target, moved) do
    data = {me, target, moved}

    [
      {:broadcast, {:synod_event, :children_migrated, data, false}},
      {:event, :children_migrated, data}
    ]
  end

  # (a child stopped while it moved is refused as :stopped, as it should be)
  defp failed(_me, target, results) do
    case for {id, {:error, reason}} <- results, reason != :stopped, do: {id, reason} do
      [] ->
        []

      failed ->
        text =
          "#{length(failed)} children failed to move to #{target}: #{inspect(Enum.take(failed, 3))}"

        [{:log, :warning, text}]
    end
  end
end
