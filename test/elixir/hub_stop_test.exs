defmodule Synod.HubStopTest do
  # Stops hold (docs/hub.md, "Stops"). Across a partition: 300 children
  # start, one node is cut off, every child is stopped through the other
  # side, the partition heals — and none runs again. Under both partition
  # strategies, with replication 1 and 2. Under :majority the cut-off
  # minority refuses stops as it refuses starts. And with replication 2, a
  # stop right after a start while one owner's coordinator lags.
  use ExUnit.Case, async: false

  import Synod.Test.HubCase
  alias Synod.{LocalCluster, StopResult}
  alias Synod.Test.{RemoteHub, Wait}

  @moduletag :distributed
  @moduletag timeout: 180_000

  setup_all do
    %{nodes: Synod.Test.Cluster.peers!(3, prefix: "stop")}
  end

  # A refused reconnection can make the first connect fail: retry, bounded.
  defp heal(side_a, side_b) do
    Wait.until(fn ->
      try do
        LocalCluster.heal(side_a, side_b)
      rescue
        MatchError -> false
      end
    end)
  end

  defp stop_through_majority(nodes, hub, opts) do
    [a, b, c] = nodes
    start_hubs(nodes, [name: hub] ++ opts)
    ids = RemoteHub.ids("st", 300)
    {:ok, _} = :erpc.call(a, RemoteHub, :start_many, [hub, "st", 300])
    await_placement(nodes, hub, ids)

    :ok = LocalCluster.partition([a, b], [c])
    await_members([a, b], hub, [a, b])
    await_members([c], hub, [c])

    if opts[:partition_strategy] == :majority do
      Wait.until(fn -> :erpc.call(c, Synod, :partitioned?, [hub]) end)
      # the minority refuses stops, as it refuses starts
      assert {:error, :partitioned} = :erpc.call(c, Synod, :stop_children, [hub, ids])
    end

    # the majority side runs every child (it restarted c's), then stops them
    await_placement([a, b], hub, ids)

    assert {:ok, %StopResult{errors: []}} =
             :erpc.call(a, Synod, :stop_children, [hub, ids, [timeout: 30_000]])

    assert running([a, b], hub) == %{}

    heal([a, b], [c])
    await_members(nodes, hub, nodes)

    # Once every member has handled what the heal brought, nothing runs and
    # no registry knows any of the children: not as running, and not as a
    # row without a copy either (a start would be refused as already
    # started).
    Wait.until(fn ->
      Enum.all?(nodes, &(:erpc.call(&1, RemoteHub, :registry_size, [hub]) == 0)) and
        running(nodes, hub) == %{}
    end)

    for n <- nodes, do: :ok = :erpc.call(n, GenServer, :call, [hub, :synod_barrier])
    assert running(nodes, hub) == %{}
    assert Enum.all?(nodes, &(:erpc.call(&1, Synod, :children, [hub]) == []))
    assert Enum.all?(nodes, &(:erpc.call(&1, RemoteHub, :registry_size, [hub]) == 0))

    # and the ids can be started again
    assert {:ok, _} = :erpc.call(c, RemoteHub, :start_many, [hub, "st", 300])
    await_placement(nodes, hub, ids)
  end

  for strategy <- [:majority, :divergence], rf <- [1, 2] do
    test "#{strategy}, replication #{rf}: a stop through the other side holds after the heal",
         %{nodes: nodes} do
      hub = :"hub_stop_#{unquote(strategy)}_#{unquote(rf)}"

      stop_through_majority(nodes, hub,
        partition_strategy: unquote(strategy),
        replication_factor: unquote(rf)
      )
    end
  end

  test "replication 2, a stop right after the start while one owner lags: no copy comes back",
       %{nodes: [a, b, c] = nodes} do
    hub = :hub_stop_lag
    start_hubs(nodes, name: hub, replication_factor: 2)

    # a child whose owners are a and b; the caller is on c
    id =
      Enum.find(RemoteHub.ids("lag", 1_000), fn id ->
        Enum.sort(:erpc.call(c, Synod, :owners, [hub, id])) == Enum.sort([a, b])
      end)

    # b's coordinator lags: everything reaches it late, after a has handled
    # both the start and the stop (before: a's registry then learned of b's
    # copy after the stop, a — an owner without a copy — started the child
    # again, and it ran for good)
    lagging = :erpc.call(b, Process, :whereis, [hub])
    :ok = :sys.suspend(lagging)

    try do
      {:ok, _} =
        :erpc.call(c, Synod, :start_children, [hub, [RemoteHub.spec(id)], [await: false]])

      Wait.until(fn -> id in :erpc.call(a, RemoteHub, :running_ids, [hub]) end)
      {:ok, _} = :erpc.call(c, Synod, :stop_children, [hub, [id], [await: false]])
      Wait.until(fn -> id not in :erpc.call(a, RemoteHub, :running_ids, [hub]) end)
    after
      :ok = :sys.resume(lagging)
    end

    # once every coordinator has handled all of it (twice: what one handles
    # may send more to another), nothing runs and no registry knows the id
    for _ <- 1..2, n <- nodes, do: :ok = :erpc.call(n, GenServer, :call, [hub, :synod_barrier])
    Process.sleep(200)
    for _ <- 1..2, n <- nodes, do: :ok = :erpc.call(n, GenServer, :call, [hub, :synod_barrier])
    assert running(nodes, hub) == %{}
    assert Enum.all?(nodes, &(:erpc.call(&1, Synod, :lookup, [hub, id]) == []))
  end
end
