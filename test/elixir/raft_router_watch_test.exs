defmodule Synod.RaftRouterWatchTest do
  # A node that runs no member of a group keeps its leader cache filled from
  # the voters' leader watches (issue 18, "Routing"): after its first answer
  # it subscribes to every voter's leader changes, so it learns a new leader
  # after a failover (a leadership transfer, then the leader's VM killed)
  # without making a call, failed or not, in between.
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Raft.{Router, Watches}
  alias Synod.Store
  alias Synod.Test.Raft
  alias Synod.Test.Wait

  @moduletag timeout: 120_000

  setup do
    ctx = Raft.start_cluster("rw", 1, &Store.start/3)
    on_exit(fn -> Raft.stop_cluster(ctx) end)
    {:ok, store: ctx.name, nodes: ctx.nodes, leader: ctx.leader, client: hd(ctx.clients)}
  end

  defp cached(client, store), do: :erpc.call(client, Router, :leader, [store])

  defp watching?(voter, store, client) do
    {Router, client} in Enum.map(
      GenServer.call({Watches.name(store), voter}, :list),
      &elem(&1, 0)
    )
  end

  test "a non-member node learns each new leader from the voters' leader watches, with no call",
       %{store: s, nodes: nodes, leader: leader, client: c} do
    assert :erpc.call(c, Synod.Raft.Info, :view, [s]) == nil
    assert {:ok, _, nil} = :erpc.call(c, Store, :put, [s, "k", "1"])
    assert cached(c, s) == leader

    # One answer was enough: the client's router watches every voter.
    Wait.until(fn -> Enum.all?(nodes, &watching?(&1, s, c)) end)

    # A transfer: no node goes down, the old leader is not asked again.
    [next | _] = nodes -- [leader]
    assert :ok = :erpc.call(leader, Synod.Raft, :transfer_leader, [s, next])
    Wait.until(fn -> Enum.all?(nodes, &(:erpc.call(&1, Synod.Raft, :leader, [s]) == next)) end)
    Wait.until(fn -> cached(c, s) == next end)

    # The leader's VM killed: nodedown drops it, the survivors' watches
    # name the one they elect.
    LocalCluster.kill(next)
    survivors = nodes -- [next]
    elected = Raft.wait_leader(s, survivors)
    Wait.until(fn -> cached(c, s) == elected end)

    # And the cache is right: the next call goes there at once.
    assert {:ok, _, nil} = :erpc.call(c, Store, :put, [s, "k", "2"])
    assert cached(c, s) == elected
  end
end
