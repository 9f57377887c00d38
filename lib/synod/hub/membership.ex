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

  @doc """
  A membership change on a side that now sees `members` (sorted, itself
  included) and has known `known`, under `strategy`, its partition state
  before being `{partitioned, healing}` (`healing`: healed, waiting for a
  peer's sync before looking at its suspended rows). Returns the new
  partition state and the effects, in order:

    * `:suspend_children` — stop this node's copies, keeping their rows
      (then `{:event, :children_stopped, ...}` for what stopped);
    * `{:event, :partitioned | :healed, members}`;
    * `{:reconcile, old_ring, reason}` — decide every row again against the
      new ring (`old_ring` for the mode changes), not while partitioned or
      healing: a side that heals by meeting the majority again waits for
      that member's sync, which brings the stops made meanwhile
      (`synced/1`).
  """
  @spec on_change(atom(), [node()], MapSet.t(), {boolean(), boolean()}, term(), term()) ::
          {{boolean(), boolean()}, [tuple() | atom()]}
  def on_change(strategy, members, known, {partitioned, healing}, old_ring, reason) do
    {partitioned, healing, effects} =
      case transition(strategy, members, known, partitioned) do
        :suspend -> {true, healing, [:suspend_children, {:event, :partitioned, members}]}
        :heal -> {false, true, [{:event, :healed, members}]}
        :none -> {partitioned, healing, []}
      end

    if partitioned or healing,
      do: {{partitioned, healing}, effects},
      else: {{partitioned, healing}, effects ++ [{:reconcile, old_ring, reason}]}
  end

  @doc """
  A peer's full picture arrived (or a member left): a side that was healing
  reconciles now, with the stops the picture brought.
  """
  @spec synced(boolean()) :: {boolean(), [tuple()]}
  def synced(true = _healing), do: {false, [{:reconcile, nil, :healed}]}
  def synced(false), do: {false, []}

  @doc """
  A coordinator `pid` of `node` said hello (or welcome); `peers` maps each
  peer to `{pid, monitor}` (`{nil, nil}` while awaited). The effects:

    * nothing, for the coordinator already counted;
    * a new coordinator of a member still counted (its predecessor
      crashed, or this one did and awaits it: it runs the same children or
      adopted them, so the ring stays): `{:watch_peer, node, pid}` (monitor
      it, forget the old monitor and the wait), `{:sync, node}` (send it
      this node's full picture);
    * a new member: the same, then `{:know, node}`, `{:event,
      :member_joined, node}` and `{:membership, {:joined, node}}` (a new
      ring, `on_change/6`).
  """
  @spec hello(map(), node(), pid()) :: [tuple()]
  def hello(peers, node, pid) do
    case peers do
      %{^node => {^pid, _}} ->
        []

      %{^node => _} ->
        [{:watch_peer, node, pid}, {:sync, node}]

      _ ->
        [
          {:watch_peer, node, pid},
          {:know, node},
          {:sync, node},
          {:event, :member_joined, node},
          {:membership, {:joined, node}}
        ]
    end
  end

  @doc """
  Peer `node` left for `reason` (its node went down, its hub stopped, or
  its restarted coordinator never came): nothing when it is no peer, else
  in order `{:unwatch_peer, node}`, `{:cancel_moves_to, node}` (moves to it
  are given up), `{:drop_node, node}` (its copies leave every row),
  `{:event, :member_left, {node, reason}}`, `{:membership, {:left, node}}`,
  `:synced` (a side that was healing reconciles now) and `:send_orphans`
  (the rows still without a copy go to their owners, docs/hub.md "Churn").
  """
  @spec leave(map(), node(), term()) :: [tuple() | atom()]
  def leave(peers, node, reason) do
    if Map.has_key?(peers, node),
      do: [
        {:unwatch_peer, node},
        {:cancel_moves_to, node},
        {:drop_node, node},
        {:event, :member_left, {node, reason}},
        {:membership, {:left, node}},
        :synced,
        :send_orphans
      ],
      else: []
  end

  @doc """
  The monitor on peer `node`'s coordinator fired with `reason` (`connected?`:
  whether its node is still connected): `[{:await_peer, node, why}]` (wait
  a while for its successor, which adopts the children there) or the
  effects of `leave/3`.
  """
  @spec down(map(), node(), term(), boolean()) :: [tuple() | atom()]
  def down(peers, node, reason, connected?) do
    case on_down(reason, connected?) do
      {:await, why} -> [{:await_peer, node, why}]
      {:remove, why} -> leave(peers, node, why)
    end
  end
end
