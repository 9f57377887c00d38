defmodule Synod.HubPartitionTest do
  # Real partitions between :peer nodes (the cookie recipe of DESIGN.md).
  # With :majority the minority stops its children and refuses starts until
  # healed; with :divergence both sides keep running.
  use ExUnit.Case, async: false

  import Synod.Test.HubCase
  alias Synod.StartResult
  alias Synod.Test.{RemoteHub, Wait}

  @moduletag :distributed
  @moduletag timeout: 120_000

  setup do
    %{nodes: Synod.Test.Cluster.peers!(3, prefix: "part")}
  end

  # Cuts `lone` from every other node in `rest` (each pair with two different
  # wrong cookies), then heals by restoring cookies and reconnecting.
  defp cut(lone, rest) do
    for other <- rest do
      :ok = :erpc.call(lone, RemoteHub, :cut, [other, :cut_lone])
      :ok = :erpc.call(other, RemoteHub, :cut, [lone, :cut_other])
    end

    Wait.until(fn -> Enum.all?(rest, &(&1 not in :erpc.call(lone, Node, :list, []))) end)
  end

  defp heal(lone, rest) do
    for other <- rest do
      :ok = :erpc.call(lone, RemoteHub, :heal, [other])
      :ok = :erpc.call(other, RemoteHub, :heal, [lone])
    end

    # a connection attempt refused just before the cookies came back can
    # make the first connect fail: retry, bounded
    for other <- rest, do: Wait.until(fn -> :erpc.call(lone, Node, :connect, [other]) end)
  end

  test ":majority — the minority stops its children and refuses starts; healing restores them", %{
    nodes: [a, b, c] = nodes
  } do
    start_hubs(nodes, name: :hub_maj, partition_strategy: :majority)

    {:ok, %StartResult{errors: []}} =
      :erpc.call(a, RemoteHub, :start_many, [:hub_maj, "p", 1_500])

    ids = RemoteHub.ids("p", 1_500)
    await_placement(nodes, :hub_maj, ids)

    {:ok, _} =
      :erpc.call(c, RemoteHub, :forward_events, [:hub_maj, self(), [:partitioned, :healed]])

    cut(c, [a, b])
    assert_receive {:forwarded, ^c, {:synod, :hub_maj, :partitioned, [^c]}}, 10_000
    assert :erpc.call(c, Synod, :partitioned?, [:hub_maj])
    assert :erpc.call(c, RemoteHub, :running_ids, [:hub_maj]) == []

    assert {:error, :partitioned} =
             :erpc.call(c, RemoteHub, :start_many, [:hub_maj, "minority", 3])

    # the majority runs everything
    await_members([a, b], :hub_maj, [a, b])
    refute :erpc.call(a, Synod, :partitioned?, [:hub_maj])
    await_placement([a, b], :hub_maj, ids)

    heal(c, [a, b])
    assert_receive {:forwarded, ^c, {:synod, :hub_maj, :healed, _}}, 10_000
    await_members(nodes, :hub_maj, nodes)
    await_placement(nodes, :hub_maj, ids)
    assert :erpc.call(c, RemoteHub, :running_ids, [:hub_maj]) != []
    assert {:ok, _} = :erpc.call(c, RemoteHub, :start_many, [:hub_maj, "after", 3])
  end

  test ":divergence — both sides keep running; healing leaves each child once", %{
    nodes: [a, b, c] = nodes
  } do
    start_hubs(nodes, name: :hub_div)

    {:ok, %StartResult{errors: []}} =
      :erpc.call(a, RemoteHub, :start_many, [:hub_div, "q", 1_500])

    ids = RemoteHub.ids("q", 1_500)
    await_placement(nodes, :hub_div, ids)
    on_c = :erpc.call(c, RemoteHub, :running_ids, [:hub_div])

    cut(c, [a, b])
    await_members([a, b], :hub_div, [a, b])
    await_members([c], :hub_div, [c])
    # both sides run every child: the majority restarted c's, c kept its own
    # and restarted the others
    await_placement([a, b], :hub_div, ids)
    await_placement([c], :hub_div, ids)
    assert Enum.all?(on_c, &(&1 in :erpc.call(c, RemoteHub, :running_ids, [:hub_div])))

    heal(c, [a, b])
    await_members(nodes, :hub_div, nodes)
    await_placement(nodes, :hub_div, ids)
  end
end
