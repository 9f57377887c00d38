defmodule Synod.HubClientTest do
  # Client nodes and start order (docs/hub.md): a node that runs no member
  # starts, finds and stops children through a member, with the members'
  # results and read-your-writes; and a hub started before its node is
  # distributed joins the cluster when distribution comes up.
  use ExUnit.Case, async: false

  import Synod.Test.HubCase
  alias Synod.{StartResult, StopResult}
  alias Synod.Test.{RemoteHub, Wait}

  @moduletag :distributed
  @moduletag timeout: 120_000

  setup_all do
    nodes = Synod.Test.Cluster.peers!(3, prefix: "client")
    # Peers are connected to each other only by `global`'s mesh, in the
    # background: under load the client node may not see the members yet
    # when the first test starts (then it rightly answers :unknown_hub).
    for n <- nodes, m <- nodes, n != m, do: true = :erpc.call(n, Node, :connect, [m])
    %{nodes: nodes}
  end

  test "a node that runs no member starts, looks up and stops children through one", %{
    nodes: [a, b, client]
  } do
    start_hubs([a, b], name: :hub_client, replication_factor: 2)
    ids = RemoteHub.ids("cl", 200)

    assert {:ok, %StartResult{started: started, errors: []}} =
             :erpc.call(client, RemoteHub, :start_many, [:hub_client, "cl", 200])

    assert length(started) == 400
    assert Enum.all?(started, fn {_id, node, pid} -> node in [a, b] and node(pid) == node end)

    # read-your-writes on the caller's node, at once
    for {id, node, pid} <- Enum.take(started, 20) do
      assert {node, pid} in :erpc.call(client, Synod, :lookup, [:hub_client, id])
      assert is_pid(:erpc.call(client, Synod, :whereis, [:hub_client, id]))
    end

    await_placement([a, b], :hub_client, ids)

    # the same checks as on a member
    assert {:error, {:already_started, ["cl-1"]}} =
             :erpc.call(client, RemoteHub, :start_many, [:hub_client, "cl", 1])

    assert {:error, {:unknown_hub, :no_such_hub}} =
             :erpc.call(client, Synod, :start_children, [:no_such_hub, []])

    assert {:ok, %StopResult{stopped: stopped, errors: []}} =
             :erpc.call(client, Synod, :stop_children, [:hub_client, ids])

    assert length(stopped) == 400
    assert :erpc.call(client, Synod, :whereis, [:hub_client, "cl-1"]) == nil
    assert running([a, b], :hub_client) == %{}

    assert {:error, %StopResult{errors: [{"cl-1", _, :not_found}]}} =
             :erpc.call(client, Synod, :stop_children, [:hub_client, ["cl-1"]])
  end

  test "a hub started before distribution joins the cluster when it comes up", %{
    nodes: [a, b, _]
  } do
    start_hubs([a, b], name: :hub_early)
    {:ok, _} = :erpc.call(a, RemoteHub, :start_many, [:hub_early, "early", 100])

    # a VM with no distribution, driven over its standard input and output
    {:ok, peer, :nonode@nohost} =
      :peer.start_link(%{
        connection: :standard_io,
        args:
          [~c"-kernel", ~c"prevent_overlapping_partitions", ~c"false"] ++
            Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
      })

    try do
      {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:synod])
      {:ok, _} = :peer.call(peer, RemoteHub, :start_hub, [[name: :hub_early]])
      assert {:ok, _} = :peer.call(peer, RemoteHub, :start_many, [:hub_early, "alone", 20])
      assert :peer.call(peer, Synod, :members, [:hub_early]) == [:nonode@nohost]

      name = :"early_#{System.unique_integer([:positive])}@127.0.0.1"
      {:ok, _} = :peer.call(peer, :net_kernel, :start, [[name, :longnames]])
      true = :peer.call(peer, :erlang, :set_cookie, [Node.get_cookie()])
      true = :peer.call(peer, Node, :connect, [a])

      await_members([a, b], :hub_early, [a, b, name])

      Wait.until(fn ->
        :peer.call(peer, Synod, :members, [:hub_early]) == Enum.sort([a, b, name])
      end)

      # the early children and the others are placed on the three members
      ids = RemoteHub.ids("early", 100) ++ RemoteHub.ids("alone", 20)
      members = [a, b, name]
      Wait.until(fn -> placed_exactly?(members, :hub_early, ids) end, 15_000)
    after
      :peer.stop(peer)
    end
  end
end
