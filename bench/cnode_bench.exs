# C node benchmark: requests per second and latency (p50, p99) through the C
# node, against the same operations through the Elixir dispatcher, measured in
# the same run on the same 3-peer cluster.
#
#   ERL_AFLAGS="-kernel prevent_overlapping_partitions false" \
#     elixir --name cbench_ctl@127.0.0.1 -S mix run bench/cnode_bench.exs [REQUESTS] [BATCH] [ROUNDS]
#
# REQUESTS (default 300) sequential requests per operation and round, BATCH
# (default 10) trivial children per start request, ROUNDS (default 3);
# medians over rounds are printed, with the ratio C node / Elixir.
#
# One caller on this (hub-less) node makes every request, one at a time:
#   start   C node: GenServer.call({:synod_cnode, C}, {:children_start, Hub, Entries, []})
#           Elixir: :erpc.call(A, Synod, :start_children, [Hub, Specs])  — A a member
#   stop    the same, children_stop / Synod.stop_children
#   event   C node: {:propagate_event, Hub, {:bench, I}, [members: :global]}
#           Elixir: :erpc.call(A, Synod.Dispatcher, :propagate_event, [...])
# Both paths take one hop from the caller to a dispatcher and wait for every
# answer (events: until sent to the 3 members, as Synod.Dispatcher does).

{_, 0} = System.cmd("epmd", ["-daemon"])

[requests, batch, rounds] =
  case Enum.map(System.argv(), &String.to_integer/1) do
    [r, b, n] -> [r, b, n]
    [r, b] -> [r, b, 3]
    [r] -> [r, 10, 3]
    [] -> [300, 10, 3]
  end

hub = :bench_hub
peers = Synod.LocalCluster.start(3, prefix: "cbench")
nodes = [a | _] = Enum.map(peers, &elem(&1, 1))
for n <- nodes, do: {:ok, _} = :erpc.call(n, Synod, :start, [[name: hub]])

# Bounded polling (the bench runs in any MIX_ENV, without test/support).
wait = fn check ->
  Enum.reduce_while(1..500, nil, fn _, _ ->
    if check.(), do: {:halt, :ok}, else: Process.sleep(20) && {:cont, :timeout}
  end)
  |> case do
    :ok -> :ok
    _ -> raise "bench cluster did not settle"
  end
end

wait.(fn -> Enum.all?(nodes, &(length(:erpc.call(&1, Synod, :members, [hub])) == 3)) end)

cnode = :"synod_cbench@127.0.0.1"
{:ok, cnode_pid} = Synod.CNode.start_link(name: cnode, hub: hub, connect: [a], log_level: :warn)

wait.(fn ->
  match?({:ok, [_, _, _], _, _, _}, GenServer.call({:synod_cnode, cnode}, {:ring_info, hub}))
end)

start = {Agent, :start_link, [Function, :identity, [0]]}
ids = fn tag, round, i -> for k <- 1..batch, do: "#{tag}-#{round}-#{i}-#{k}" end
c_call = fn request -> GenServer.call({:synod_cnode, cnode}, request, 60_000) end

ops = %{
  {:cnode, :start} => fn round, i ->
    entries = for id <- ids.(:c, round, i), do: {id, start, nil}
    {:ok, _} = c_call.({:children_start, hub, entries, []})
  end,
  {:cnode, :stop} => fn round, i ->
    {:ok, _} = c_call.({:children_stop, hub, ids.(:c, round, i), []})
  end,
  {:cnode, :event} => fn _round, i ->
    :ok = c_call.({:propagate_event, hub, {:bench, i}, [members: :global]})
  end,
  {:elixir, :start} => fn round, i ->
    specs = for id <- ids.(:e, round, i), do: %{id: id, start: start}
    {:ok, _} = :erpc.call(a, Synod, :start_children, [hub, specs])
  end,
  {:elixir, :stop} => fn round, i ->
    {:ok, _} = :erpc.call(a, Synod, :stop_children, [hub, ids.(:e, round, i)])
  end,
  {:elixir, :event} => fn _round, i ->
    :ok =
      :erpc.call(a, Synod.Dispatcher, :propagate_event, [hub, {:bench, i}, [members: :global]])
  end
}

# Runs one operation `requests` times; returns {requests/s, p50 µs, p99 µs}.
measure = fn op, round ->
  fun = Map.fetch!(ops, op)

  {total, lats} =
    :timer.tc(fn ->
      for i <- 1..requests do
        {us, _} = :timer.tc(fn -> fun.(round, i) end)
        us
      end
    end)

  sorted = Enum.sort(lats)
  pct = fn p -> Enum.at(sorted, min(length(sorted) - 1, div(length(sorted) * p, 100))) end
  {requests / (total / 1_000_000), pct.(50), pct.(99)}
end

median = fn list -> list |> Enum.sort() |> Enum.at(div(length(list), 2)) end

IO.puts(
  "Synod C node benchmark: #{requests} sequential requests per operation, #{batch} children per start, 3 peers, #{rounds} rounds (medians)"
)

# Rounds alternate the order of the two paths so neither always runs first.
results =
  for round <- 1..rounds, reduce: %{} do
    acc ->
      order = if rem(round, 2) == 1, do: [:cnode, :elixir], else: [:elixir, :cnode]

      Enum.reduce(order, acc, fn path, acc ->
        Enum.reduce([:start, :stop, :event], acc, fn what, acc ->
          m = measure.({path, what}, round)
          Map.update(acc, {path, what}, [m], &[m | &1])
        end)
      end)
  end

med = fn key, i -> results |> Map.fetch!(key) |> Enum.map(&elem(&1, i)) |> median.() end

IO.puts(
  "\n  operation            path     req/s     p50 µs    p99 µs   req/s ratio C/Elixir  p50 ratio"
)

pad = fn v, w -> v |> to_string() |> String.pad_leading(w) end

for what <- [:start, :stop, :event] do
  for path <- [:elixir, :cnode] do
    rate = med.({path, what}, 0)
    label = if what == :event, do: "event to 3 members", else: "#{what} #{batch} children"

    ratio =
      if path == :cnode do
        r = rate / med.({:elixir, what}, 0)
        p = med.({:cnode, what}, 1) / med.({:elixir, what}, 1)
        "#{pad.(Float.round(r, 2), 6)}x               #{pad.(Float.round(p, 2), 6)}x"
      else
        "(baseline)"
      end

    IO.puts(
      "  #{String.pad_trailing(label, 20)} #{String.pad_trailing(to_string(path), 7)}" <>
        "#{pad.(round(rate), 7)}  #{pad.(med.({path, what}, 1), 8)}  #{pad.(med.({path, what}, 2), 8)}   #{ratio}"
    )
  end
end

Synod.CNode.stop(cnode_pid)
Synod.LocalCluster.stop(peers)
