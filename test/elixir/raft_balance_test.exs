defmodule Synod.RaftBalanceTest do
  # Leaders spread (docs/raft.md, "Leaders spread") on real peers with real
  # files: 12 groups on 3 nodes end with 4 leaders per node (within one);
  # with one node killed (kill -9) the survivors lead 6 each (within one);
  # once it is restarted and its members recovered from their own
  # directories, the 12 groups again end with 4 leaders per node.
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.Wait

  @moduletag timeout: 180_000
  @groups 12

  setup do
    dir = Path.join(System.tmp_dir!(), "synod-balance-#{System.unique_integer([:positive])}")
    {:ok, started} = Agent.start(fn -> [] end)

    on_exit(fn ->
      LocalCluster.stop(Agent.get(started, & &1))
      Agent.stop(started)
      File.rm_rf(dir)
    end)

    {:ok, dir: dir, started: started}
  end

  test "12 groups on 3 nodes end with 4 leaders per node, again after a node is killed and restarted",
       ctx do
    names = for i <- 1..3, do: "bal#{i}-#{System.unique_integer([:positive])}"
    peers = LocalCluster.start(3, names: names)
    Agent.update(ctx.started, &(peers ++ &1))
    nodes = Enum.map(peers, &elem(&1, 1))
    Enum.each(nodes, &fast_rounds/1)
    u = System.unique_integer([:positive])
    groups = for i <- 1..@groups, do: :"bal#{u}_#{i}"

    for g <- groups,
        do: :ok = Synod.Raft.start_group(g, nodes, group_dir(ctx, g), machine: Synod.Raft.KV)

    wait_spread(groups, nodes, 4)

    # Traffic on every group, so a restarted member has entries to catch up.
    for g <- groups, i <- 1..3, do: {:ok, _} = command(hd(nodes), g, {:put, i, i})

    [victim | survivors] = nodes
    kill(victim)
    wait_spread(groups, survivors, 6)

    [alive, _host] = victim |> Atom.to_string() |> String.split("@")
    [{_, ^victim} = peer] = LocalCluster.start(1, names: [alive])
    Agent.update(ctx.started, &[peer | &1])
    fast_rounds(victim)

    for g <- groups do
      dir = Path.join(group_dir(ctx, g), Atom.to_string(victim))

      {:ok, _} =
        :erpc.call(victim, Synod.Raft, :start_member, [
          [name: g, voters: nodes, data_dir: dir, machine: Synod.Raft.KV]
        ])
    end

    wait_spread(groups, nodes, 4)

    # Every group still takes commands, from every node.
    for g <- groups, n <- nodes, do: {:ok, _} = command(n, g, {:put, n, g})
  end

  defp group_dir(ctx, group), do: Path.join(ctx.dir, Atom.to_string(group))

  defp fast_rounds(node) do
    :ok = :erpc.call(node, Application, :put_env, [:synod, :raft_balance_ms, 300])
    :ok = :erpc.call(node, Application, :put_env, [:synod, :raft_balance_settle_ms, 300])
  end

  defp command(node, group, cmd),
    do: :erpc.call(node, Synod.Raft, :command, [group, cmd, [timeout: 10_000]], 11_000)

  defp kill(node) do
    os_pid = :erpc.call(node, :os, :getpid, [])
    Node.monitor(node, true)
    System.cmd("kill", ["-9", to_string(os_pid)])
    assert_receive {:nodedown, ^node}, 10_000
  end

  # Every group has one leader all `nodes` agree on, and each node leads
  # `share` groups, within one. Returns the leaders per node.
  defp wait_spread(groups, nodes, share) do
    Wait.until(
      fn ->
        leaders = for g <- groups, do: agreed_leader(g, nodes)

        if Enum.all?(leaders, &(&1 in nodes)) do
          per_node = Enum.frequencies(leaders)
          counts = Enum.map(nodes, &Map.get(per_node, &1, 0))
          if Enum.all?(counts, &(abs(&1 - share) <= 1)), do: per_node
        end
      end,
      60_000,
      100
    )
  end

  defp agreed_leader(group, nodes) do
    case Enum.uniq(Enum.map(nodes, &:erpc.call(&1, Synod.Raft, :leader, [group], 5_000))) do
      [leader] -> leader
      _ -> nil
    end
  end
end
