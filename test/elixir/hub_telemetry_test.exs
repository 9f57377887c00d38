defmodule Synod.HubTelemetryTest do
  # The hub's telemetry events on real :peer nodes: children started,
  # stopped and migrated (with an application's migration strategy), the
  # redistribution after a join, and the partition state under :majority.
  use ExUnit.Case, async: false

  import Synod.Test.HubCase
  alias Synod.StartResult
  alias Synod.Test.{HubTelemetry, RemoteHub, Wait}

  @moduletag :distributed
  @moduletag timeout: 120_000

  setup do
    %{nodes: Synod.Test.Cluster.peers!(3, prefix: "tel")}
  end

  # The counts of `event` each node reported for its own children, until
  # they add up to `total` (or the wait ends).
  defp collect(event, total, key, acc \\ %{}) do
    if Enum.sum(Map.values(acc)) >= total do
      acc
    else
      receive do
        {:telemetry, node, ^event, %{count: n}, meta} when is_integer(n) ->
          case key.(node, meta) do
            nil -> collect(event, total, key, acc)
            k -> collect(event, total, key, Map.update(acc, k, n, &(&1 + n)))
          end
      after
        10_000 -> acc
      end
    end
  end

  # a node's own children: the event of the node they run on
  defp own(node, meta), do: if(meta.node == node, do: node)

  test "children started, stopped and migrated, and the redistribution, are events", %{
    nodes: [a, b, c]
  } do
    hub = :hub_tel
    opts = [name: hub, migration: Synod.Test.HubStartFirst]
    start_hubs([a, b], opts)
    for n <- [a, b, c], do: :ok = :erpc.call(n, HubTelemetry, :forward, [self()])

    {:ok, %StartResult{errors: []}} = :erpc.call(a, RemoteHub, :start_many, [hub, "t", 600])
    ids = RemoteHub.ids("t", 600)
    await_placement([a, b], hub, ids)

    # every member reports its own starts and each other member's it learns of
    started = collect([:synod, :hub, :children, :started], 1_200, &{&1, &2.node})
    own = for {{n, n}, count} <- started, into: %{}, do: {n, count}
    assert own == Map.new([a, b], &{&1, length(:erpc.call(&1, Synod, :children, [hub, :local]))})
    assert started[{a, b}] == own[b] and started[{b, a}] == own[a]

    # c joins: a and b move c's share to it, start first (the application's strategy)
    {:ok, _} = :erpc.call(c, RemoteHub, :start_hub, [opts])
    await_members([a, b, c], hub, [a, b, c])
    await_placement([a, b, c], hub, ids)
    on_c = length(:erpc.call(c, Synod, :children, [hub, :local]))
    assert on_c > 0

    moved =
      collect([:synod, :hub, :children, :migrated], on_c, fn _node, meta ->
        if meta.to == c, do: meta.from
      end)

    assert Enum.sum(Map.values(moved)) == on_c and Map.keys(moved) -- [a, b] == []

    for n <- [a, b] do
      assert_receive {:telemetry, ^n, [:synod, :hub, :redistribution, :stop],
                      %{duration: d, moved: m}, %{hub: ^hub, node: ^n, reason: {:joined, ^c}}}
                     when is_integer(d) and d >= 0 and m > 0,
                     5_000
    end

    # stops: every node reports what it stopped
    {:ok, _} = :erpc.call(b, Synod, :stop_children, [hub, ids])
    stopped = collect([:synod, :hub, :children, :stopped], 600, &own/2)
    assert Enum.sum(Map.values(stopped)) == 600
    assert Map.keys(stopped) |> Enum.sort() == Enum.sort([a, b, c])
  end

  test "the partition state under :majority: partitioned, then healed", %{
    nodes: [a, b, c] = nodes
  } do
    hub = :hub_tel_part
    start_hubs(nodes, name: hub, partition_strategy: :majority)
    :ok = :erpc.call(c, HubTelemetry, :forward, [self()])

    for other <- [a, b] do
      :ok = :erpc.call(c, RemoteHub, :cut, [other, :cut_lone])
      :ok = :erpc.call(other, RemoteHub, :cut, [c, :cut_other])
    end

    assert_receive {:telemetry, ^c, [:synod, :hub, :partition], %{members: 1},
                    %{hub: ^hub, node: ^c, state: :partitioned}},
                   10_000

    for other <- [a, b] do
      :ok = :erpc.call(c, RemoteHub, :heal, [other])
      :ok = :erpc.call(other, RemoteHub, :heal, [c])
    end

    for other <- [a, b], do: Wait.until(fn -> :erpc.call(c, Node, :connect, [other]) end)

    assert_receive {:telemetry, ^c, [:synod, :hub, :partition], %{members: m},
                    %{hub: ^hub, node: ^c, state: :healed}}
                   when m >= 2,
                   10_000
  end
end
