defmodule Synod.Hub.Results do
  @moduledoc false
  # Pure: collects per-node answers for one start or stop request and turns
  # them into a StartResult or StopResult. Knows which (child, node) pairs are
  # still pending, so a node that fails or a deadline that passes turns
  # exactly those pairs into errors. No I/O, no clock.

  alias Synod.{StartResult, StopResult}

  defstruct kind: :start, pending: %{}, ok: [], whole: [], errors: [], count: 0

  @type t :: %__MODULE__{}

  # `pending` maps each node to the ids it has yet to answer for: the list
  # it was sent (nothing answered yet), or a map `id => true` once it has
  # answered for some of them. A node usually answers all at once, and then
  # the map is never built.
  #
  # `ok` holds the `{id, node, pid}` answers taken one by one (newest
  # first); `whole` the nodes that answered every id at once, as
  # `{node, ids, pids}` (newest first), checked but not yet expanded: their
  # tuples are built once, in order, by `finish/1` (no list reversed, no
  # intermediate list left to collect).

  @doc "A collector expecting, for each node, answers for the listed ids."
  @spec new(:start | :stop, %{node() => [term()]}) :: t()
  def new(kind, expected) do
    %__MODULE__{
      kind: kind,
      pending: Map.new(expected),
      count: Enum.sum(Enum.map(expected, fn {_, ids} -> length(ids) end))
    }
  end

  @doc """
  Records `[{id, result}]` answered by `node`, or `{:stopped, pids}` /
  `{:started, pids}` (every id sent to `node` stopped / started or already
  running there, their pids in the order sent; the tag must be this
  request's kind); unexpected answers are ignored.
  """
  @spec record(t(), node(), [{term(), term()}] | {:stopped | :started, [pid()]}) :: t()
  def record(%__MODULE__{pending: pending, kind: kind} = state, node, {tag, pids})
      when (tag == :stopped and kind == :stop) or (tag == :started and kind == :start) do
    with {:ok, ids} when is_list(ids) <- Map.fetch(pending, node),
         {:ok, n} <- check_pids(ids, pids, 0) do
      whole = [{node, ids, pids} | state.whole]
      %{state | pending: Map.delete(pending, node), whole: whole, count: state.count - n}
    else
      # not the ids as sent (some answered one by one), or not a pid per id
      _ -> state
    end
  end

  # (anything else that is not a list answers for no id)
  def record(state, _node, results) when not is_list(results), do: state

  def record(%__MODULE__{pending: pending} = state, node, results) do
    case Map.fetch(pending, node) do
      :error ->
        state

      {:ok, ids} ->
        cond do
          covers?(ids, results) -> record_all(state, node, results)
          is_list(ids) -> record_some(state, node, Map.from_keys(ids, true), results)
          true -> record_some(state, node, ids, results)
        end
    end
  end

  # Whether `results` answer exactly the pending `ids` (as sent), each once:
  # the usual batch answer, which can then be taken as it is instead of one
  # by one against a set of pending ids.
  defp covers?(ids, results) when is_list(ids) and is_list(results) do
    # A coordinator answers in the order it was sent: one walk of both
    # lists says so, with no map built.
    in_order?(ids, results) or any_order?(ids, results)
  end

  defp covers?(_ids, _results), do: false

  defp in_order?([id | ids], [{id, _} | results]), do: in_order?(ids, results)
  defp in_order?([], []), do: true
  defp in_order?(_ids, _results), do: false

  defp any_order?(ids, results) do
    n = length(ids)
    answered = :maps.from_list(results)
    length(results) == n and map_size(answered) == n and Enum.all?(ids, &is_map_key(answered, &1))
  rescue
    # not a proper list of {id, result} pairs: record_some/4 skips the rest
    ArgumentError -> false
  end

  defp record_all(state, node, results) do
    {ok, errors} = take_all(results, node, state.ok, state.errors)

    %{
      state
      | pending: Map.delete(state.pending, node),
        ok: ok,
        errors: errors,
        count: state.count - length(results)
    }
  end

  defp take_all([{id, {:ok, pid}} | results], node, ok, errors),
    do: take_all(results, node, [{id, node, pid} | ok], errors)

  defp take_all([{id, {:error, reason}} | results], node, ok, errors),
    do: take_all(results, node, ok, [{id, node, reason} | errors])

  defp take_all([{id, other} | results], node, ok, errors),
    do: take_all(results, node, ok, [{id, node, {:bad_result, other}} | errors])

  defp take_all([], _node, ok, errors), do: {ok, errors}

  # Whether `pids` has a pid for each of `ids` (a walk, nothing built).
  defp check_pids([_ | ids], [pid | pids], n) when is_pid(pid), do: check_pids(ids, pids, n + 1)
  defp check_pids([], [], n), do: {:ok, n}
  defp check_pids(_ids, _pids, _n), do: :error

  @doc """
  Every `{id, node, pid}` answered: the nodes that answered whole, in the
  order they answered (each in the order its ids were sent), then the
  answers taken one by one, in the order they came.
  """
  @spec oks(t()) :: [{term(), node(), pid()}]
  def oks(%__MODULE__{ok: ok, whole: whole}),
    do: :lists.foldl(&expand/2, :lists.reverse(ok), whole)

  defp expand({node, ids, pids}, tail), do: expand(ids, pids, node, tail)

  defp expand([id | ids], [pid | pids], node, tail),
    do: [{id, node, pid} | expand(ids, pids, node, tail)]

  defp expand([], [], _node, tail), do: tail

  defp record_some(state, node, ids, results) do
    %__MODULE__{pending: pending} = state

    {ids, ok, errors, count} =
      Enum.reduce(pairs(results), {ids, state.ok, state.errors, state.count}, fn {id, result},
                                                                                 {ids, ok, errors,
                                                                                  count} = acc ->
        case Map.pop(ids, id) do
          {nil, _} ->
            acc

          {true, ids} ->
            case result do
              {:ok, pid} -> {ids, [{id, node, pid} | ok], errors, count - 1}
              {:error, reason} -> {ids, ok, [{id, node, reason} | errors], count - 1}
              other -> {ids, ok, [{id, node, {:bad_result, other}} | errors], count - 1}
            end
        end
      end)

    pending = if ids == %{}, do: Map.delete(pending, node), else: Map.put(pending, node, ids)
    %{state | pending: pending, ok: ok, errors: errors, count: count}
  end

  # The well-formed `{id, result}` answers of a list (a misbehaving node
  # loses only its own bad answers, which then stay pending).
  defp pairs(results) when is_list(results), do: for({_, _} = pair <- results, do: pair)
  defp pairs(_results), do: []

  @doc "Every pair still pending on `node` fails with `reason`."
  @spec fail_node(t(), node(), term()) :: t()
  def fail_node(state, node, reason) do
    case Map.pop(state.pending, node) do
      {nil, _} ->
        state

      {ids, pending} ->
        ids = if is_map(ids), do: Map.keys(ids), else: ids
        errors = Enum.reduce(ids, state.errors, fn id, acc -> [{id, node, reason} | acc] end)
        %{state | pending: pending, errors: errors, count: state.count - length(ids)}
    end
  end

  @doc "Every pair still pending fails with `reason` (the deadline passed)."
  @spec fail_all(t(), term()) :: t()
  def fail_all(state, reason),
    do: Enum.reduce(Map.keys(state.pending), state, &fail_node(&2, &1, reason))

  @doc "Whether every expected answer is in."
  @spec done?(t()) :: boolean()
  def done?(%__MODULE__{count: count}), do: count <= 0

  @doc """
  The final result. For stops, a child counts as stopped if any node stopped
  it; `:not_found` from the other nodes asked is then not an error (they were
  asked only in case the local registry lagged), and a child no node knew is
  reported once as `:not_found`.
  """
  @spec finish(t()) :: {:ok | :error, StartResult.t() | StopResult.t()}
  def finish(%__MODULE__{kind: :start} = state) do
    result = %StartResult{started: oks(state), errors: Enum.reverse(state.errors)}
    {if(result.errors == [], do: :ok, else: :error), result}
  end

  def finish(%__MODULE__{kind: :stop, errors: []} = state),
    do: {:ok, %StopResult{stopped: oks(state), errors: []}}

  def finish(%__MODULE__{kind: :stop} = state) do
    oks = oks(state)
    stopped_ids = MapSet.new(oks, fn {id, _, _} -> id end)

    {not_found, other} =
      state.errors
      |> Enum.reverse()
      |> Enum.reject(fn {id, _, reason} ->
        reason == :not_found and MapSet.member?(stopped_ids, id)
      end)
      |> Enum.split_with(fn {_, _, reason} -> reason == :not_found end)

    errors_by_id = MapSet.new(other, fn {id, _, _} -> id end)

    not_found =
      not_found
      |> Enum.reject(fn {id, _, _} -> MapSet.member?(errors_by_id, id) end)
      |> Enum.uniq_by(fn {id, _, _} -> id end)

    result = %StopResult{stopped: oks, errors: other ++ not_found}
    {if(result.errors == [], do: :ok, else: :error), result}
  end
end
