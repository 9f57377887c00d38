defmodule Synod.Raft.KV do
  @moduledoc """
  A small replicated key-value map, the simplest `Synod.Raft.Machine`: used
  by the tests, the benchmarks and the demo, and a model for your own.

  Commands (`Synod.Raft.command/3`) and their results:

    * `{:put, key, value}` → the previous value or `nil`
    * `{:delete, key}` → the previous value or `nil`
    * `{:incr, key, by}` → the new integer value (a missing key counts as 0)
    * `{:cas, key, expected, new}` → `:ok` or `{:conflict, current}`

  Read with `Synod.Raft.query(group, {Map, :get, [key]})` (or
  `&Map.get(&1, key)` from compiled code): the state is a map.
  """
  @behaviour Synod.Raft.Machine

  @impl true
  def init(_arg), do: %{}

  @impl true
  def apply(_meta, {:put, key, value}, state),
    do: {Map.put(state, key, value), Map.get(state, key)}

  def apply(_meta, {:delete, key}, state), do: {Map.delete(state, key), Map.get(state, key)}

  def apply(_meta, {:incr, key, by}, state) when is_integer(by) do
    new = Map.get(state, key, 0) + by
    {Map.put(state, key, new), new}
  end

  def apply(_meta, {:cas, key, expected, new}, state) do
    case Map.get(state, key) do
      ^expected -> {Map.put(state, key, new), :ok}
      current -> {state, {:conflict, current}}
    end
  end

  def apply(_meta, other, state), do: {state, {:error, {:unknown_command, other}}}

  @impl true
  def snapshot(state), do: state

  @impl true
  def restore(snapshot, _arg), do: snapshot
end
