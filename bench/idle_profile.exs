# Where the idle CPU of many Raft groups goes: reductions per second by
# process type, messages received by the members, and distribution bytes,
# on 3 real :peer nodes with N idle groups (3 voters each, KV machine).
#
#   MIX_ENV=test mix run bench/idle_profile.exs [N] [SAMPLE_MS]
#
# N groups (default 100) started as groups_bench.exs starts them; once
# every node names a leader for every group and 3 s have passed, each node
# samples for SAMPLE_MS (default 5,000): the reductions of every process
# (grouped: raft members, their watches processes, the balancer, the
# distribution (net_kernel, global), everything else), the bytes through
# the distribution ports and the scheduler runtime. Reductions count work,
# not time, so they do not depend on the load of the machine.

{_, 0} = System.cmd("epmd", ["-daemon"])
alias Synod.LocalCluster
alias Synod.Test.Raft

[n, sample_ms] =
  case Enum.map(System.argv(), &String.to_integer/1) do
    [n, ms] -> [n, ms]
    [n] -> [n, 5_000]
    [] -> [100, 5_000]
  end

{:module, _, profile_beam, _} =
  defmodule IdleProfile do
    # Runs on a peer: reductions per process kind over `ms`, and the
    # distribution ports' bytes in and out.
    def sample(groups, ms) do
      members = MapSet.new(groups, &Process.whereis(Synod.Raft.member_name(&1)))
      watches = MapSet.new(groups, &Process.whereis(Synod.Raft.Watches.name(&1)))
      r0 = reductions()
      d0 = dist_bytes()
      {rt0, _} = :erlang.statistics(:runtime)
      Process.sleep(ms)
      {rt1, _} = :erlang.statistics(:runtime)
      r1 = reductions()
      d1 = dist_bytes()

      by_kind =
        Enum.reduce(r1, %{}, fn {pid, red}, acc ->
          delta = red - Map.get(r0, pid, 0)
          Map.update(acc, kind(pid, members, watches), delta, &(&1 + delta))
        end)

      {by_kind, d1 - d0, rt1 - rt0}
    end

    defp reductions do
      for pid <- Process.list(),
          {:reductions, r} <- [Process.info(pid, :reductions)],
          into: %{},
          do: {pid, r}
    end

    defp dist_bytes do
      for {_node, port} <- :erlang.system_info(:dist_ctrl), is_port(port), reduce: 0 do
        acc ->
          i = elem(:erlang.port_info(port, :input) || {:input, 0}, 1)
          o = elem(:erlang.port_info(port, :output) || {:output, 0}, 1)
          acc + i + o
      end
    end

    defp kind(pid, members, watches) do
      cond do
        MapSet.member?(members, pid) ->
          :raft_member

        MapSet.member?(watches, pid) ->
          :raft_watches

        true ->
          case Process.info(pid, :registered_name) do
            {:registered_name, Synod.Raft.Balancer.Shell} -> :balancer
            {:registered_name, name} when name in [:net_kernel, :global_name_server] -> :dist
            {:registered_name, name} when is_atom(name) and name != [] -> other(name)
            _ -> :other
          end
      end
    end

    defp other(name) do
      if String.starts_with?(Atom.to_string(name), "Elixir.Synod"), do: :synod_other, else: :other
    end
  end

root = Path.join(System.tmp_dir!(), "synod-idle-profile-#{System.unique_integer([:positive])}")
u = System.unique_integer([:positive])
peers = LocalCluster.start(3, prefix: "idp")
nodes = Enum.map(peers, &elem(&1, 1))

try do
  for node <- nodes,
      do:
        {:module, _} =
          :erpc.call(node, :code, :load_binary, [IdleProfile, ~c"idle_profile", profile_beam])

  groups = for i <- 1..n, do: :"idle#{u}_#{i}"
  t0 = System.monotonic_time(:millisecond)
  _ = :erpc.multicall(nodes, Raft, :start_members, [groups, nodes, root], 600_000)
  known = Raft.wait_known(groups, nodes, System.monotonic_time(:millisecond) + 300_000)

  IO.puts(
    "#{n} groups: leaders #{inspect(known)} after #{System.monotonic_time(:millisecond) - t0} ms"
  )

  Process.sleep(3_000)
  {load, _} = System.cmd("uptime", [])
  IO.puts("sampling #{sample_ms} ms; #{String.trim(load)}")
  results = :erpc.multicall(nodes, IdleProfile, :sample, [groups, sample_ms], 120_000)
  per_s = fn x -> round(x * 1000 / sample_ms) end
  kinds = [:raft_member, :raft_watches, :balancer, :dist, :synod_other, :other]

  IO.puts(
    "| node | " <>
      Enum.map_join(kinds, " | ", &"#{&1} red/s") <> " | dist bytes/s | runtime ms/s |"
  )

  IO.puts("|" <> String.duplicate(" --- |", length(kinds) + 3))

  for {node, {:ok, {by, dist, rt}}} <- Enum.zip(nodes, results) do
    IO.puts(
      "| #{node |> Atom.to_string() |> String.split("@") |> hd()} | " <>
        Enum.map_join(kinds, " | ", &"#{per_s.(Map.get(by, &1, 0))}") <>
        " | #{per_s.(dist)} | #{per_s.(rt)} |"
    )
  end
after
  LocalCluster.stop(peers)
  File.rm_rf(root)
end
