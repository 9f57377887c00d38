defmodule Synod.Hub.Events do
  @moduledoc false
  # Pure: the telemetry a hub event stands for, as effects
  # `{:telemetry, event, measurements, metadata}` that the coordinator
  # carries out with Synod.Telemetry.execute/3. The names are the agreed
  # ones (docs/hub.md, "Events"):
  #
  #   [:synod, :hub, :children, :started]   %{count}  %{hub, node}
  #   [:synod, :hub, :children, :stopped]   %{count}  %{hub, node}
  #   [:synod, :hub, :children, :migrated]  %{count}  %{hub, from, to}
  #   [:synod, :hub, :redistribution, :stop] %{duration, moved} %{hub, node, reason}
  #   [:synod, :hub, :partition]            %{members} %{hub, node, state}
  #
  # `node` is the node whose children changed (a peer's, for the changes
  # this node learns from it), or the node that decided. No I/O.

  @type effect :: {:telemetry, [atom()], map(), map()}

  @doc "The telemetry of hub event `id` with `data`, seen on `me` (none for other events)."
  @spec telemetry(atom(), node(), atom(), term()) :: [effect()]
  def telemetry(hub, _me, :children_started, {node, children}),
    do: children(hub, :started, node, length(children))

  def telemetry(hub, _me, :children_stopped, {node, children}),
    do: children(hub, :stopped, node, length(children))

  def telemetry(hub, _me, :children_migrated, {from, to, moved}),
    do: [
      {:telemetry, [:synod, :hub, :children, :migrated], %{count: length(moved)},
       %{hub: hub, from: from, to: to}}
    ]

  def telemetry(hub, me, state, members) when state in [:partitioned, :healed],
    do: [
      {:telemetry, [:synod, :hub, :partition], %{members: length(members)},
       %{hub: hub, node: me, state: state}}
    ]

  def telemetry(_hub, _me, _id, _data), do: []

  @doc """
  New copies `entries` (`{id, spec, slot, pid}`) on `node`: nothing for
  none; with no subscribers (`subscribed?` false) only their count's
  telemetry (the event, possibly large, is not built); else the
  `:children_started` event.
  """
  @spec started(atom(), node(), list(), boolean()) :: [tuple()]
  def started(_hub, _node, [], _subscribed?), do: []
  def started(hub, node, entries, false), do: children(hub, :started, node, length(entries))

  def started(_hub, node, entries, true),
    do: [{:event, :children_started, {node, for({id, _, _, pid} <- entries, do: {id, pid})}}]

  @doc "`count` children started or stopped on `node` (none for 0)."
  @spec children(atom(), :started | :stopped, node(), non_neg_integer()) :: [effect()]
  def children(_hub, _what, _node, 0), do: []

  def children(hub, what, node, count),
    do: [{:telemetry, [:synod, :hub, :children, what], %{count: count}, %{hub: hub, node: node}}]

  @doc """
  A redistribution on `me` (the reconcile after a membership change,
  `reason`) took `duration` (native units) and moved `moved` children
  (started, stopped or sent away here).
  """
  @spec redistribution(atom(), node(), term(), integer(), non_neg_integer()) :: [effect()]
  def redistribution(hub, me, reason, duration, moved),
    do: [
      {:telemetry, [:synod, :hub, :redistribution, :stop], %{duration: duration, moved: moved},
       %{hub: hub, node: me, reason: reason}}
    ]
end
