defmodule Synod.Hub.Membership do
  @moduledoc false
  # Pure: the membership decisions of a coordinator, as data. The
  # coordinator holds the peers (node => {pid, monitor} | {nil, nil} while
  # a restarted coordinator is awaited) and the members it has known, asks
  # these functions what a change means, and carries the answer out. No
  # I/O, no clock.

  alias Synod.Hub.PartitionStrategy

  @doc """
  The monitor on a peer's coordinator fired with `reason`: a node that is
  gone is gone (`{:remove, why}`); a coordinator that died on a node still
  connected is being restarted by its supervisor, with the children, so it
  is awaited (`{:await, why}`, `why` being what its leave will say if it
  never comes back).
  """
  @spec on_down(term(), boolean()) :: {:await | :remove, term()}
  def on_down(reason, connected?) do
    why = if reason in [:noconnection, :noproc], do: :nodedown, else: {:hub_down, reason}
    if reason != :noconnection and connected?, do: {:await, why}, else: {:remove, why}
  end

  @doc """
  What a coordinator that adopted its predecessor's tables does with the
  members that predecessor had: `{awaited, gone}` — those still connected
  are awaited (the ring stays), the others have left.
  """
  @spec after_restart([node()], node(), [node()]) :: {[node()], [node()]}
  def after_restart(members, me, connected) do
    others = List.delete(members, me)
    Enum.split_with(others, &(&1 in connected))
  end

  @doc "The members known after this node's name changed from `old` to `new`."
  @spec rename(MapSet.t(), node(), node()) :: MapSet.t()
  def rename(known, old, new), do: known |> MapSet.delete(old) |> MapSet.put(new)

  @doc """
  Whether every member this node has known is connected and none is
  awaited: only then may what is kept for absent members (tombstones) go.
  """
  @spec complete?(MapSet.t(), map(), map()) :: boolean()
  def complete?(known, peers, restarting),
    do: restarting == %{} and MapSet.size(known) == map_size(peers) + 1

  @doc """
  The partition transition for a side that sees `members` and has known
  `known`, under `strategy`, from `partitioned` before: `:suspend`, `:heal`
  or `:none`.
  """
  @spec transition(atom(), [node()], MapSet.t(), boolean()) :: :suspend | :heal | :none
  def transition(strategy, members, known, partitioned) do
    now = PartitionStrategy.module(strategy).partitioned?(members, Enum.sort(known))

    cond do
      now and not partitioned -> :suspend
      partitioned and not now -> :heal
      true -> :none
    end
  end
end
