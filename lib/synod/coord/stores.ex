defmodule Synod.Coord.Stores do
  @moduledoc """
  Whether a store exists, answered at once, so that a call on an unknown
  store returns `{:error, {:unknown_store, name}}` instead of waiting its
  whole timeout for `{:error, :timeout}`.

  A store is known when this node runs one of its members, or when a
  connected node does (asked once, then remembered: a store's name is not
  reused for something else while the VM runs). Asking costs one ETS
  lookup on a member's node; elsewhere one `:erpc` multicall until a member
  answered.
  """

  alias Synod.Raft.Info

  @doc "`:ok` if `store` is a running store, else `{:error, {:unknown_store, store}}`."
  @spec check(atom()) :: :ok | {:error, {:unknown_store, atom()}}
  def check(store) when is_atom(store) do
    cond do
      Info.view(store) != nil -> :ok
      :persistent_term.get({__MODULE__, store}, false) -> :ok
      remote?(store) -> remember(store)
      true -> {:error, {:unknown_store, store}}
    end
  end

  defp remote?(store) do
    Node.list()
    |> :erpc.multicall(Info, :view, [store], 1_000)
    |> Enum.any?(&match?({:ok, %{}}, &1))
  end

  defp remember(store) do
    :persistent_term.put({__MODULE__, store}, true)
    :ok
  end
end
