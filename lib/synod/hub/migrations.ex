defmodule Synod.Hub.Migrations do
  @moduledoc false
  # Pure: the moves this node started, from the start it sent to the new
  # owner until the move is answered (cold), handed over (hot), timed out,
  # or given up because its target left. Two terms of the coordinator's
  # state: `moves` (ref => %{kind, ids, target, timer, ...}) and
  # `migrating` (ids of hot moves not yet handed over, which reconcile
  # leaves alone). Each function returns them with the moves the
  # coordinator must act on (answer, stop old copies, cancel timers). No
  # I/O, no clock.

  @type move :: map()

  @doc "Records a move; a hot move's children are migrating until handed over."
  @spec begin(map(), MapSet.t(), reference(), move()) :: {map(), MapSet.t()}
  def begin(moves, migrating, ref, %{kind: kind, ids: ids} = move) do
    migrating = if kind == :hot, do: Enum.into(ids, migrating), else: migrating
    {Map.put(moves, ref, move), migrating}
  end

  @doc """
  The new owner answered move `ref`: the move (nil when there is no such
  move waiting for an answer), and the moves left — a cold move ends here,
  a hot one goes on to its handover.
  """
  @spec answered(map(), reference()) :: {move() | nil, map()}
  def answered(moves, ref) do
    case moves do
      %{^ref => %{kind: :cold} = move} -> {move, Map.delete(moves, ref)}
      %{^ref => %{kind: :hot} = move} -> {move, Map.put(moves, ref, %{move | kind: :handover})}
      _ -> {nil, moves}
    end
  end

  @doc "Move `ref` ends (handed over, or timed out): its children are decided again."
  @spec finish(map(), MapSet.t(), reference()) :: {move() | nil, map(), MapSet.t()}
  def finish(moves, migrating, ref) do
    case Map.pop(moves, ref) do
      {nil, _} -> {nil, moves, migrating}
      {move, rest} -> {move, rest, Enum.reduce(move.ids, migrating, &MapSet.delete(&2, &1))}
    end
  end

  @doc "`node` left: the moves to it are given up (returned, for their timers)."
  @spec cancel_to(map(), MapSet.t(), node()) :: {[move()], map(), MapSet.t()}
  def cancel_to(moves, migrating, node) do
    {gone, kept} = Enum.split_with(moves, fn {_, move} -> Map.get(move, :target) == node end)
    gone = Enum.map(gone, &elem(&1, 1))
    ids = Enum.flat_map(gone, & &1.ids)
    {gone, Map.new(kept), Enum.reduce(ids, migrating, &MapSet.delete(&2, &1))}
  end
end
