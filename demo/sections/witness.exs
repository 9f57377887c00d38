# Demo section: two BEAM nodes and the C node as a Raft witness.
# Loaded by demo/cluster.exs with Code.require_file and run as
# Synod.Demo.Witness.run(nodes) on three fresh peer nodes (it uses two).
#
# It starts priv/synod_cnode with --witness, a Synod.Store whose voters are
# the two BEAM nodes and the witness, writes keys, kills -9 the leader's VM,
# and shows the other BEAM node leading (with the witness's vote) and the
# store answering: reads of the old keys and new writes.

defmodule Synod.Demo.Witness do
  @store :demo_witness

  defp heading(text), do: IO.puts("\n\e[1m== #{text}\e[0m")
  # Polls fun every 5 ms until it returns a truthy value (15 s at most).
  defp until(fun, deadline \\ System.monotonic_time(:millisecond) + 15_000) do
    case fun.() do
      v when v not in [nil, false] ->
        v

      _ ->
        if System.monotonic_time(:millisecond) > deadline, do: raise("demo: timed out")
        Process.sleep(5)
        until(fun, deadline)
    end
  end

  defp short(node), do: node |> Atom.to_string() |> String.split("@") |> hd()

  def run(nodes) do
    [a, b | _] = nodes

    root =
      Path.join(System.tmp_dir!(), "synod-demo-witness-#{System.unique_integer([:positive])}")

    File.mkdir_p!(root)
    w = :"synod_witness#{System.unique_integer([:positive])}@127.0.0.1"

    heading("A Raft witness: 2 BEAM nodes + the C node")

    {:ok, wpid} =
      Synod.CNode.start_link(
        name: w,
        witness: [@store],
        data_dir: Path.join(root, "witness"),
        log_level: :warn
      )

    Process.unlink(wpid)

    IO.puts(
      "  #{short(w)}: priv/synod_cnode --witness #{@store} (OS pid #{Synod.CNode.os_pid(wpid)})"
    )

    for n <- [a, b] do
      opts = [name: @store, voters: [a, b, w], witnesses: [w], data_dir: Path.join(root, "#{n}")]
      {:ok, _} = :erpc.call(n, Synod.Store, :start_member, [opts])
    end

    leader =
      until(fn ->
        case Enum.uniq(Enum.map([a, b], &:erpc.call(&1, Synod.Raft, :leader, [@store]))) do
          [l] when l in [a, b] -> l
          _ -> nil
        end
      end)

    st = :erpc.call(leader, Synod.Raft, :status, [@store])

    for m <- st.members, do: IO.puts("  member #{short(m.node)}: #{m.kind}")
    IO.puts("  leader: #{short(leader)}")

    for i <- 1..5 do
      {:ok, _, _} = :erpc.call(leader, Synod.Store, :put, [@store, "k#{i}", "v#{i}"])
    end

    IO.puts("  wrote k1..k5")
    survivor = if leader == a, do: b, else: a
    target = st.commit + 5

    until(fn -> :erpc.call(survivor, Synod.Raft, :status, [@store]).applied >= target end)

    heading("kill -9 of the leader's VM (#{short(leader)})")
    t0 = System.monotonic_time(:millisecond)
    Synod.LocalCluster.kill(leader)

    until(fn -> :erpc.call(survivor, Synod.Raft, :leader?, [@store]) end)

    IO.puts(
      "  #{short(survivor)} leads after #{System.monotonic_time(:millisecond) - t0} ms (voted in by the witness)"
    )

    {:ok, kv} = :erpc.call(survivor, Synod.Store, :get, [@store, "k3"])
    IO.puts("  get k3 -> #{kv.value}")
    {:ok, _, _} = :erpc.call(survivor, Synod.Store, :put, [@store, "after", "the kill"])
    {:ok, kv} = :erpc.call(survivor, Synod.Store, :get, [@store, "after"])
    IO.puts("  put/get after -> #{kv.value}: the store goes on")
    Synod.CNode.stop(wpid)
    File.rm_rf(root)
  end
end
