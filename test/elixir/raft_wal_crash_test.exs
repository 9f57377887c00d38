defmodule Synod.RaftWalCrashTest do
  # Several groups on the shared write-ahead log (log: :wal) of 3 real peer
  # nodes, under traffic: one node killed with kill -9 mid-write and
  # restarted, then all three killed at once and restarted. Every command
  # that was acknowledged is applied on every member of its group, and no
  # member's files record two votes in one term (or a term that goes down).
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.Raft

  @moduletag timeout: 240_000
  @groups 6
  @clients 12

  setup do
    dir = Path.join(System.tmp_dir!(), "synod-wal-crash-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, dir: dir}
  end

  test "kill -9 mid-write, of one node and then of all: no acknowledged command lost, no vote twice",
       ctx do
    names = for i <- 1..3, do: "wk#{i}-#{System.unique_integer([:positive])}"
    {:ok, started} = Agent.start(fn -> [] end)

    on_exit(fn ->
      LocalCluster.stop(Agent.get(started, & &1))
      Agent.stop(started)
    end)

    peers = LocalCluster.start(3, names: names)
    Agent.update(started, &(peers ++ &1))
    nodes = Enum.map(peers, &elem(&1, 1))
    tag = System.unique_integer([:positive])
    groups = for i <- 1..@groups, do: :"wg#{i}_#{tag}"
    start_all(nodes, nodes, groups, ctx.dir)
    for g <- groups, do: Raft.wait_leader(g, nodes, 30_000)

    {:ok, acked} = Agent.start(fn -> %{} end)

    # 1. One node killed while every group takes commands.
    [victim | survivors] = nodes
    clients = traffic(groups, survivors, acked)
    Process.sleep(1_500)
    LocalCluster.kill(victim)
    Process.sleep(1_000)
    stop_traffic(clients)
    restart(victim, names, nodes, ctx.dir, groups, started)
    for g <- groups, do: Raft.wait_converged(g, nodes, 30_000)

    # 2. All of them at once, mid-write, with each WAL batch held 20 ms
    # before its write (a test-only hook): records in flight are lost.
    for n <- nodes,
        do: :ok = :erpc.call(n, :persistent_term, :put, [{Synod.Raft.Wal, :delay_ms}, 20])

    clients = traffic(groups, nodes, acked)
    Process.sleep(1_500)
    for n <- nodes, do: LocalCluster.kill(n)
    stop_traffic(clients)
    for n <- nodes, do: wait_down(n)
    restart_all(names, nodes, ctx.dir, groups, started)
    for g <- groups, do: Raft.wait_leader(g, nodes, 30_000)
    for g <- groups, do: {:ok, _} = Raft.command(hd(nodes), g, {:put, :after, 1}, 10_000)
    for g <- groups, do: Raft.wait_converged(g, nodes, 30_000)

    acked = Agent.get(acked, & &1)
    assert map_size(acked) == @groups
    assert Enum.all?(acked, fn {_g, list} -> length(list) > 10 end)

    for g <- groups, n <- nodes do
      state = Raft.local_state(n, g)
      lost = Enum.reject(Map.fetch!(acked, g), fn i -> Map.get(state, i) == i end)
      assert lost == [], "#{n} lost acknowledged commands of #{g}: #{inspect(lost)}"
      Raft.check_votes(Path.join([ctx.dir, Atom.to_string(g), Atom.to_string(n)]))
    end
  end

  defp start_all(on, voters, groups, root) do
    results = :erpc.multicall(on, Raft, :start_members, [groups, voters, root, [log: :wal]])
    for r <- results, do: assert(r == {:ok, length(groups)})
  end

  # @clients processes, each on one group (round robin) through one of
  # `via`, recording the commands that were acknowledged.
  defp traffic(groups, via, acked) do
    for k <- 1..@clients do
      g = Enum.at(groups, rem(k, length(groups)))
      node = Enum.at(via, rem(k, length(via)))
      spawn(fn -> client(g, node, acked) end)
    end
  end

  defp client(g, node, acked) do
    i = System.unique_integer([:positive])

    case safe_command(node, g, i) do
      {:ok, _} -> Agent.update(acked, fn m -> Map.update(m, g, [i], &[i | &1]) end)
      _ -> Process.sleep(20)
    end

    client(g, node, acked)
  end

  defp stop_traffic(clients) do
    for c <- clients do
      ref = Process.monitor(c)
      Process.exit(c, :kill)
      receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
    end
  end

  defp safe_command(node, g, i) do
    Raft.command(node, g, {:put, i, i}, 2_000)
  catch
    _, _ -> :unknown
  end

  defp restart(victim, names, nodes, root, groups, started) do
    wait_down(victim)
    name = Enum.at(names, Enum.find_index(nodes, &(&1 == victim)))
    [{_, ^victim} = peer] = LocalCluster.start(1, names: [name])
    Agent.update(started, &[peer | &1])
    start_all([victim], nodes, groups, root)
  end

  defp restart_all(names, nodes, root, groups, started) do
    peers = LocalCluster.start(3, names: names)
    Agent.update(started, &(peers ++ &1))
    assert Enum.map(peers, &elem(&1, 1)) == nodes
    start_all(nodes, nodes, groups, root)
  end

  defp wait_down(node, tries \\ 500) do
    cond do
      node not in Node.list() -> :ok
      tries == 0 -> flunk("#{node} is still up")
      true -> Process.sleep(20) && wait_down(node, tries - 1)
    end
  end
end
