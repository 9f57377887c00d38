# Demo section: a Raft group. Loaded by demo/cluster.exs with
# Code.require_file and run as Synod.Demo.Raft.run(nodes) on three fresh
# peer nodes.
#
# It starts a 3-voter group running the Synod.Raft.KV machine (durable logs
# in a temporary directory), shows the election, commits commands, watches
# leadership on every node, kills the leader's VM (kill -9) and measures the
# time until every survivor knows the new leader.

defmodule Synod.Demo.Raft do
  @group :demo_raft

  def run(nodes) do
    section("Raft: election, a leader killed, failover")
    dir = Path.join(System.tmp_dir!(), "synod-demo-raft-#{System.unique_integer([:positive])}")

    try do
      demo(nodes, dir)
    after
      File.rm_rf(dir)
    end
  end

  defp demo(nodes, dir) do
    :ok = Synod.Raft.start_group(@group, nodes, dir, machine: Synod.Raft.KV)
    leader = wait_leader(nodes)
    term = :erpc.call(leader, Synod, :term, [@group])
    say("3 voters; #{short(leader)} won the election in term #{term}; every node agrees:")

    for n <- nodes do
      say("  #{short(n)} says the leader is #{short(:erpc.call(n, Synod, :leader, [@group]))}")
    end

    for i <- 1..100,
        do:
          {:ok, _} =
            :erpc.call(Enum.random(nodes), Synod.Raft, :command, [@group, {:incr, :counter, i}])

    say(
      "100 commands from random nodes, each fsynced on a majority before it was applied: counter = #{counter(leader)}"
    )

    survivors = nodes -- [leader]

    for n <- survivors,
        do: :ok = :erpc.call(n, Synod, :add_leader_watch, [@group, {:demo, n}, self()])

    t0 = System.monotonic_time(:microsecond)
    Synod.LocalCluster.kill(leader)
    say("killed #{short(leader)}'s VM (kill -9) ...")
    {new_leader, us} = wait_watches(survivors, leader, %{}, t0)

    say(
      "every survivor's leader watch names #{short(new_leader)} after #{Float.round(us / 1000, 1)} ms"
    )

    say(
      "  (nodedown makes the survivors campaign at once, in rank order; plain Raft would wait an election timeout)"
    )

    {:ok, _} = :erpc.call(hd(survivors), Synod.Raft, :command, [@group, {:incr, :counter, 1}])
    say("the group goes on: counter = #{counter(new_leader)} (nothing committed was lost)")
  end

  defp counter(node) do
    {:ok, state} = :erpc.call(node, Synod.Raft, :query, [@group, &Function.identity/1])
    Map.get(state, :counter)
  end

  defp wait_watches(survivors, old, known, t0) do
    if map_size(known) == length(survivors) and length(Enum.uniq(Map.values(known))) == 1 do
      {hd(Map.values(known)), System.monotonic_time(:microsecond) - t0}
    else
      receive do
        {:synod_leader_watch, @group, {:demo, n}, _event, _before, %{leader: l}}
        when l not in [nil, old] ->
          wait_watches(survivors, old, Map.put(known, n, l), t0)

        {:synod_leader_watch, @group, _, _, _, _} ->
          wait_watches(survivors, old, known, t0)
      after
        10_000 -> raise "demo: no new leader within 10 s"
      end
    end
  end

  defp wait_leader(nodes, deadline \\ System.monotonic_time(:millisecond) + 15_000) do
    case Enum.uniq(Enum.map(nodes, &:erpc.call(&1, Synod, :leader, [@group]))) do
      [leader] when leader != nil ->
        leader

      _ ->
        if System.monotonic_time(:millisecond) > deadline, do: raise("demo: no leader in 15 s")
        Process.sleep(5)
        wait_leader(nodes, deadline)
    end
  end

  defp short(nil), do: "nobody"
  defp short(node), do: node |> Atom.to_string() |> String.split("@") |> hd()
  defp section(title), do: IO.puts("\n== #{title} ==")
  defp say(line), do: IO.puts(line)
end
