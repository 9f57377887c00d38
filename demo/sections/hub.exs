# Demo section: the hub. Loaded by demo/cluster.exs with Code.require_file
# and run as Synod.Demo.Hub.run(nodes), where `nodes` are three peer nodes
# with :synod on their code path.
#
# It starts a hub on each node, starts children across the cluster, shows
# where they run, kills one node and shows its children move, with timing.

defmodule Synod.Demo.Hub do
  @hub :demo_hub
  @count 3_000

  def run([first | _] = nodes) do
    section("Hub: distributed children")

    # 1. A hub on every node. (In an application it would be a child,
    #    {Synod, name: :demo_hub}; Synod.start/1 starts one without a link,
    #    so it outlives the short :erpc call that starts it.)
    for node <- nodes do
      {:ok, _} = :erpc.call(node, Synod, :start, [[name: @hub]])
    end

    wait(fn ->
      Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :members, [@hub])) == length(nodes)))
    end)

    say(
      "hub #{inspect(@hub)} runs on #{length(nodes)} nodes; members: #{inspect(:erpc.call(first, Synod, :members, [@hub]))}"
    )

    # 2. Start children across the cluster with one awaited call.
    # Each child is an Agent holding its number. (No anonymous functions in
    # the specs: they travel to other nodes, and this file is not loaded there.)
    specs =
      for i <- 1..@count,
          do: %{id: "worker-#{i}", start: {Agent, :start_link, [Function, :identity, [i]]}}

    {micros, {:ok, result}} =
      :timer.tc(fn ->
        :erpc.call(first, Synod, :start_children, [@hub, specs, [timeout: 30_000]])
      end)

    say(
      "started #{length(result.started)} children in #{div(micros, 1000)} ms (one call, one batch per node)"
    )

    show_spread(nodes)

    victim = List.last(nodes)
    survivors = nodes -- [victim]
    # a child on the node we are going to kill
    {id, node, pid} = Enum.find(result.started, fn {_, node, _} -> node == victim end)
    say("#{id} runs on #{node} as #{inspect(pid)}; every node answers whereis locally:")
    for n <- nodes, do: say("  on #{n}: #{inspect(:erpc.call(n, Synod, :whereis, [@hub, id]))}")

    # 3. Kill a node and watch its children restart on their new owners.
    lost = length(:erpc.call(victim, Synod, :children, [@hub, :local]))
    say("killing #{victim}, which runs #{lost} children ...")
    true = Node.monitor(victim, true)
    started_at = System.monotonic_time(:millisecond)
    :erpc.cast(victim, :erlang, :halt, [])

    wait(fn ->
      Enum.sum(for n <- survivors, do: length(:erpc.call(n, Synod, :children, [@hub, :local]))) ==
        @count
    end)

    elapsed = System.monotonic_time(:millisecond) - started_at

    say(
      "all #{@count} children run again on #{length(survivors)} nodes after #{elapsed} ms (as seen from here, polling)"
    )

    show_spread(survivors)

    wait(fn ->
      match?([{n, _}] when n != victim, :erpc.call(first, Synod, :lookup, [@hub, id]))
    end)

    [{new_node, new_pid}] = :erpc.call(first, Synod, :lookup, [@hub, id])
    say("#{id} now runs on #{new_node} as #{inspect(new_pid)} (it was on #{node})")
    receive do: ({:nodedown, ^victim} -> :ok), after: (5_000 -> :ok)
    :ok
  end

  defp show_spread(nodes) do
    for node <- nodes do
      say("  #{node}: #{length(:erpc.call(node, Synod, :children, [@hub, :local]))} children")
    end
  end

  defp wait(fun, deadline \\ System.monotonic_time(:millisecond) + 15_000) do
    cond do
      fun.() -> :ok
      System.monotonic_time(:millisecond) > deadline -> raise "demo: condition not met in 15 s"
      true -> Process.sleep(5) && wait(fun, deadline)
    end
  end

  defp section(title), do: IO.puts("\n== #{title} ==")
  defp say(line), do: IO.puts(line)
end
