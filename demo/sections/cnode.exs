# Demo section: the C node. Loaded by demo/cluster.exs with Code.require_file
# and run as Synod.Demo.CNode.run(nodes) on a fresh cluster of three peers.
#
# It starts a hub on the peers, then the native C node (priv/synod_cnode,
# erl_interface) joined to the same cluster, and drives the hub through it:
# placement answers compared with the Elixir ring, children started and
# stopped through the C node, an event propagated to every member.

defmodule Synod.Demo.CNode do
  @hub :demo_c_hub
  @count 1_000

  def run([first | _] = nodes) do
    section("The C node: the dispatcher's work done natively")

    for node <- nodes, do: {:ok, _} = :erpc.call(node, Synod, :start, [[name: @hub]])
    wait(fn -> Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :members, [@hub])) == 3)) end)

    # 1. The C node joins: a hidden node, connected to one member; it learns
    #    the rest (ring_info, member events) and connects to each.
    cnode = :"synod_c_demo@127.0.0.1"

    {:ok, pid} =
      Synod.CNode.start_link(name: cnode, hub: @hub, connect: [first], log_level: :warn)

    server = {:synod_cnode, cnode}

    wait(fn -> match?({:ok, [_, _, _], _, _, _}, GenServer.call(server, {:ring_info, @hub})) end)
    {:ok, members, vnodes, _seed, rf} = GenServer.call(server, {:ring_info, @hub})

    say(
      "#{cnode} (OS pid #{Synod.CNode.os_pid(pid)}) joined; it sees #{length(members)} members, #{vnodes} vnodes, replication factor #{rf}"
    )

    # 2. Same ring, same C core as the NIF: same owners.
    ids = for i <- 1..@count, do: "native-#{i}"

    same =
      Enum.count(ids, fn id ->
        GenServer.call(server, {:owners, @hub, id}) ==
          {:ok, :erpc.call(first, Synod, :owners, [@hub, id])}
      end)

    say("placement: the C node and the hub agree on the owner of #{same} of #{@count} ids")

    # 3. Start children through it: one GenServer.call, one batch per owner.
    entries = for id <- ids, do: {id, {Agent, :start_link, [Function, :identity, [id]]}, nil}

    {micros, {:ok, started}} =
      :timer.tc(fn ->
        GenServer.call(server, {:children_start, @hub, entries, [timeout: 30_000]}, 60_000)
      end)

    say("started #{length(started)} children through the C node in #{div(micros, 1000)} ms:")

    for {node, count} <- started |> Enum.frequencies_by(&elem(&1, 1)) |> Enum.sort() do
      say("  #{node}: #{count} children")
    end

    {id, node, {:ok, child}} = hd(started)

    say(
      "#{id} runs on #{node} as #{inspect(child)}; the hub agrees: #{inspect(:erpc.call(first, Synod, :lookup, [@hub, id]))}"
    )

    # 4. An event to every member, delivered to each one's subscribers. This
    #    process subscribes on each member with the protocol's own call.
    for n <- nodes, do: :ok = GenServer.call({@hub, n}, {:synod_subscribe, self(), [:hello]})
    :ok = GenServer.call(server, {:propagate_event, @hub, {:hello, :from_c}, [members: :global]})

    got =
      for _ <- nodes do
        receive do
          {:synod, @hub, :hello, :from_c} -> true
        after
          5_000 -> nil
        end
      end

    say("event :hello propagated by the C node reached #{Enum.count(got, & &1)} of 3 members")

    # 5. Stop them all, through the C node again.
    {micros, {:ok, stopped}} =
      :timer.tc(fn ->
        GenServer.call(server, {:children_stop, @hub, ids, [timeout: 30_000]}, 60_000)
      end)

    say("stopped #{length(stopped)} children through the C node in #{div(micros, 1000)} ms")
    Synod.CNode.stop(pid)
    :ok
  end

  defp wait(fun, deadline \\ System.monotonic_time(:millisecond) + 15_000) do
    cond do
      fun.() -> :ok
      System.monotonic_time(:millisecond) > deadline -> raise "demo: condition not met in 15 s"
      true -> Process.sleep(20) && wait(fun, deadline)
    end
  end

  defp section(title), do: IO.puts("\n== #{title} ==")
  defp say(line), do: IO.puts(line)
end
