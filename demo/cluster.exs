# Synod's demo: a real local cluster of BEAM nodes, and where things live on it.
#
#   bash scripts/demo.sh
#
# runs this file as `elixir --name synod_demo@127.0.0.1 -S mix run demo/cluster.exs`.
# It starts three nodes on 127.0.0.1 (real epmd, real distribution), builds
# the consistent hash ring from their names, shows where a sample of keys
# lives and that every node computes the same placement, then stops one node
# and counts how many keys move. Each file in demo/sections/ adds a later
# capability and runs on a fresh cluster of its own.

alias Synod.Ring

defmodule Demo do
  def heading(text), do: IO.puts("\n\e[1m== #{text}\e[0m")
  def short(node), do: node |> Atom.to_string() |> String.split("@") |> hd()
end

Demo.heading("Starting 3 nodes on 127.0.0.1")
peers = Synod.LocalCluster.start(3, prefix: "synod_demo")
nodes = Enum.map(peers, fn {_pid, node} -> node end)
for node <- nodes, do: IO.puts("  #{node}  (#{:erpc.call(node, System, :pid, [])} as OS pid)")

Demo.heading("The ring")
ring = Ring.new(nodes)
%{points: points, vnodes: vnodes} = Ring.info(ring)

IO.puts(
  "  #{length(nodes)} members x #{vnodes} virtual nodes = #{points} points, keyed SipHash-2-4"
)

sample = [
  "user:1",
  "user:2",
  "user:3",
  "order:1001",
  "order:1002",
  "cart:alice",
  "cart:bob",
  "session:42"
]

IO.puts("\n  key            owner            replica (preference list of 2)")

for key <- sample do
  [owner, replica] = Ring.owners(ring, key, 2)

  IO.puts(
    "  #{String.pad_trailing(key, 14)} #{String.pad_trailing(Demo.short(owner), 16)} #{Demo.short(replica)}"
  )
end

keys = for i <- 1..100_000, do: "key:#{i}"
placement = Ring.lookup_many(ring, keys)

IO.puts("\n  share of 100,000 keys:")

for {node, count} <- placement |> Enum.frequencies() |> Enum.sort() do
  IO.puts(
    "    #{String.pad_trailing(Demo.short(node), 16)} #{count}  (#{Float.round(count / 1000, 1)}%)"
  )
end

Demo.heading("Every node computes the same placement")

for node <- nodes do
  theirs = :erpc.call(node, Synod.Demo.Remote, :placement, [Enum.shuffle(nodes), keys])
  verdict = if theirs == placement, do: "agrees on all 100,000 keys", else: "DISAGREES"
  IO.puts("  #{Demo.short(node)} #{verdict}")
  unless theirs == placement, do: System.halt(1)
end

Demo.heading("One node leaves")
[{gone_pid, gone} | survivors] = peers
Synod.LocalCluster.stop([{gone_pid, gone}])
IO.puts("  stopped #{gone}; #{length(Node.list())} peers still connected")
smaller = Ring.remove_member(ring, gone)
moved = Ring.diff(ring, smaller, keys)
from_gone = Enum.count(moved, fn {_key, old, _new} -> old == gone end)

IO.puts(
  "  #{length(moved)} of 100,000 keys move (#{Float.round(length(moved) / 1000, 1)}%), " <>
    "#{from_gone} of them from #{Demo.short(gone)}: only the keys it owned"
)

for {_pid, node} <- survivors do
  agrees =
    :erpc.call(node, Synod.Demo.Remote, :placement, [
      Ring.members(smaller) |> Enum.map(&elem(&1, 0)),
      keys
    ]) ==
      Ring.lookup_many(smaller, keys)

  IO.puts(
    "  #{Demo.short(node)} #{if agrees, do: "agrees on the new placement", else: "DISAGREES"}"
  )

  unless agrees, do: System.halt(1)
end

Synod.LocalCluster.stop(survivors)

for section <- Path.wildcard(Path.join(__DIR__, "sections/*.exs")) |> Enum.sort() do
  [{module, _}] = Code.require_file(section)
  peers = Synod.LocalCluster.start(3, prefix: "synod_demo")

  try do
    module.run(Enum.map(peers, &elem(&1, 1)))
  after
    Synod.LocalCluster.stop(peers)
  end
end

Demo.heading("Done")
