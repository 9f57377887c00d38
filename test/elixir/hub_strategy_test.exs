defmodule Synod.HubStrategyTest do
  # An application's strategies plugged into hubs on real :peer nodes: its
  # replication model gives each copy its mode, also after a member leaves;
  # its partition strategy decides when a side is partitioned. (Its
  # migration strategy: hub_telemetry_test.exs.)
  use ExUnit.Case, async: false

  import Synod.Test.HubCase
  alias Synod.StartResult
  alias Synod.Test.{HubLastActive, RemoteHub, Wait}

  @moduletag :distributed
  @moduletag timeout: 120_000

  setup do
    %{nodes: Synod.Test.Cluster.peers!(3, prefix: "strat")}
  end

  test "an application's replication model: every copy in the mode it gives, also after a leave",
       %{nodes: [a, b, c] = nodes} do
    hub = :hub_model
    start_hubs(nodes, name: hub, replication_factor: 2, replication_model: HubLastActive)

    {:ok, %StartResult{started: started, errors: []}} =
      :erpc.call(a, RemoteHub, :start_many, [hub, "m", 200])

    ids = RemoteHub.ids("m", 200)
    await_placement(nodes, hub, ids)
    owners = :erpc.call(a, RemoteHub, :owners, [hub, ids])

    for {id, node, pid} <- started do
      expected = HubLastActive.mode(owners[id], node)
      assert %{modes: [^expected]} = :erpc.call(node, RemoteHub, :worker_state, [pid])
    end

    # the built-in :active_passive would make the first owner's copy active
    assert Enum.any?(started, fn {id, node, _} -> hd(owners[id]) == node end)

    # c leaves: the copies whose place among the owners changed are told
    :ok = :erpc.call(c, RemoteHub, :stop_hub, [hub])
    await_members([a, b], hub, [a, b])
    await_placement([a, b], hub, ids)
    owners = :erpc.call(a, RemoteHub, :owners, [hub, ids])

    Wait.until(fn ->
      Enum.all?(ids, fn id ->
        Enum.all?(:erpc.call(a, Synod, :lookup, [hub, id]), fn {node, pid} ->
          hd(:erpc.call(node, RemoteHub, :worker_state, [pid]).modes) ==
            HubLastActive.mode(owners[id], node)
        end)
      end)
    end)
  end

  test "an application's partition strategy decides when a side is partitioned", %{
    nodes: [a, b | _]
  } do
    # Synod.Test.HubNeverAlone: partitioned while a member sees no other
    hub = :hub_alone
    start_hubs([a, b], name: hub, partition_strategy: Synod.Test.HubNeverAlone)
    refute :erpc.call(a, Synod, :partitioned?, [hub])

    :ok = :erpc.call(b, RemoteHub, :stop_hub, [hub])
    Wait.until(fn -> :erpc.call(a, Synod, :partitioned?, [hub]) end)

    assert {:error, :partitioned} = :erpc.call(a, RemoteHub, :start_many, [hub, "alone", 3])

    {:ok, _} =
      :erpc.call(b, RemoteHub, :start_hub, [
        [name: hub, partition_strategy: Synod.Test.HubNeverAlone]
      ])

    Wait.until(fn -> not :erpc.call(a, Synod, :partitioned?, [hub]) end)
    assert {:ok, _} = :erpc.call(a, RemoteHub, :start_many, [hub, "together", 3])
  end
end
