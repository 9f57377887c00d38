defmodule Synod.Fault.Linear do
  @moduledoc false
  # A linearizability checker for histories of one object, after Wing & Gong
  # (1993) with Lowe's memoisation (2017): search for an order of the
  # operations that respects real time (an op that completed before another
  # was invoked comes first) and that the sequential model accepts.
  #
  # Pure: a history in, a verdict out.
  #
  # The search is a depth-first walk over configurations {linearized set,
  # model state}. In a configuration, the ops that may go next are those not
  # yet linearized that were invoked before the earliest completion among the
  # determinate ops still pending; when no determinate op is pending, the
  # history is linearizable. Configurations already explored are remembered
  # (Lowe), so each is expanded once.
  #
  # Indeterminate ops (:info: timed out, crashed, never completed) may have
  # taken effect at any time after their invocation, or never: they have no
  # completion, so they never force the search back, and they need not be
  # linearized at all. An indeterminate op that returns nothing (a read)
  # tells nothing and is dropped.
  #
  # A model is a module with init/0 and step(state, op) -> {:ok, state} |
  # :error, where op has f, arg, type (:ok | :fail | :info) and value.
  # History is checked per key with check/3; a register model is below.

  import Bitwise

  @default_budget 500_000

  @doc """
  Checks `ops` (maps with :invoke, :complete, :type and what the model
  reads) against `model`. Returns :ok, {:error, evidence} or {:unknown,
  :budget} when more than `budget` configurations were explored.
  """
  def check(ops, model, budget \\ @default_budget) do
    ops =
      ops
      |> Enum.reject(&(&1.type == :info and model.read_only?(&1)))
      |> Enum.sort_by(& &1.invoke)

    indexed = List.to_tuple(ops)
    n = tuple_size(indexed)

    # per op: invocation, completion (:infinity when indeterminate)
    times =
      for op <- ops,
          do: {op.invoke, if(op.type == :info, do: :infinity, else: op.complete)}

    times = List.to_tuple(times)
    ctx = %{n: n, ops: indexed, times: times, model: model}
    search([{0, model.init(), 0}], MapSet.new(), ctx, budget, {0, 0, model.init()})
  end

  defp search([], _seen, ctx, _budget, deepest), do: {:error, evidence(ctx, deepest)}

  defp search(_stack, _seen, _ctx, 0, _deepest), do: {:unknown, :budget}

  defp search([{bits, state, depth} | stack], seen, ctx, budget, deepest) do
    case earliest_pending_completion(ctx, bits) do
      :none ->
        :ok

      deadline ->
        next =
          for i <- candidates(ctx, bits, deadline),
              {:ok, state2} <- [ctx.model.step(state, elem(ctx.ops, i))],
              config = {bits ||| 1 <<< i, state2},
              not MapSet.member?(seen, config),
              do: config

        seen = Enum.reduce(next, seen, &MapSet.put(&2, &1))
        next = for {b, st} <- next, do: {b, st, depth + 1}
        deepest = if depth > elem(deepest, 0), do: {depth, bits, state}, else: deepest
        search(next ++ stack, seen, ctx, budget - 1, deepest)
    end
  end

  defp earliest_pending_completion(ctx, bits) do
    Enum.reduce(0..(ctx.n - 1)//1, :none, fn i, best ->
      case elem(ctx.times, i) do
        {_, :infinity} ->
          best

        {_, done} when (bits >>> i &&& 1) == 0 ->
          if best == :none, do: done, else: min(best, done)

        _ ->
          best
      end
    end)
  end

  # Ops are sorted by invocation, so the walk stops at the first one invoked
  # after the deadline.
  defp candidates(ctx, bits, deadline) do
    Enum.reduce_while(0..(ctx.n - 1)//1, [], fn i, acc ->
      {invoked, _} = elem(ctx.times, i)

      cond do
        invoked >= deadline -> {:halt, acc}
        (bits >>> i &&& 1) == 1 -> {:cont, acc}
        true -> {:cont, [i | acc]}
      end
    end)
    |> Enum.reverse()
  end

  # The first determinate op (by completion) that the deepest configuration
  # could not place, with the model's state there.
  defp evidence(ctx, {depth, bits, state}) do
    stuck =
      0..(ctx.n - 1)//1
      |> Enum.filter(fn i ->
        (bits >>> i &&& 1) == 0 and elem(elem(ctx.times, i), 1) != :infinity
      end)
      |> Enum.min_by(fn i -> elem(elem(ctx.times, i), 1) end, fn -> nil end)

    %{
      linearized: depth,
      of: ctx.n,
      state: state,
      op: if(stuck, do: elem(ctx.ops, stuck))
    }
  end
end

defmodule Synod.Fault.Linear.Register do
  @moduledoc false
  # A register: read -> value, write(v), cas({old, new}) -> :ok | :fail.
  # The initial value is nil (the key does not exist).

  def init, do: nil

  def read_only?(op), do: op.f == :read

  def step(state, %{f: :read, value: v}), do: if(v == state, do: {:ok, state}, else: :error)
  def step(_state, %{f: :write, arg: v}), do: {:ok, v}

  def step(state, %{f: :cas, arg: {old, new}, type: type}) do
    case {state == old, type} do
      {true, :fail} -> :error
      {true, _} -> {:ok, new}
      {false, :fail} -> {:ok, state}
      {false, _} -> :error
    end
  end
end
