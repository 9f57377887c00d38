defmodule Synod.RingClusterTest do
  # Real epmd, real distribution, three :peer nodes: every member computes the
  # same placement for the same membership.
  use ExUnit.Case, async: false

  alias Synod.Ring

  @moduletag :distributed

  setup_all do
    %{nodes: Synod.Test.Cluster.peers!(3, prefix: "ring")}
  end

  test "every node places every key on the same owners", %{nodes: nodes} do
    keys = for i <- 1..5_000, do: "child-#{i}"

    members = [node() | nodes]

    # each node gets the membership in a different order
    placements =
      for {node, i} <- Enum.with_index(nodes) do
        order = Enum.take(members, i) |> then(&(Enum.drop(members, i) ++ &1))

        :erpc.call(node, Synod.Test.RemoteRing, :placement, [order, keys, 200])
      end

    local = Ring.new(members)

    assert Enum.uniq(placements) == [
             {Ring.lookup_many(local, keys),
              Enum.map(Enum.take(keys, 200), &Ring.owners(local, &1, 3))}
           ]

    # every member owns a share of the keys
    assert keys |> Enum.map(&Ring.lookup(local, &1)) |> Enum.uniq() |> Enum.sort() ==
             Enum.sort(members)
  end

  test "a ring's info rebuilds the same ring on another node", %{nodes: [a, b | _]} do
    # A ring is a NIF resource, local to its VM: one that crossed nodes is
    # refused with a clear error. What travels is its info.
    remote_ring = :erpc.call(a, Synod.Ring, :new, [[:x, :y, {:z, 2}], [vnodes: 100]])

    assert {:exception, {:badarg, "not a ring"}, _} =
             catch_error(:erpc.call(a, :synod_ring, :info, [remote_ring]))

    info = :erpc.call(a, Synod.Test.RemoteRing, :info, [[:x, :y, {:z, 2}], [vnodes: 100]])
    opts = [vnodes: info.vnodes, seed: info.seed]

    {[owner_on_b], _} =
      :erpc.call(b, Synod.Test.RemoteRing, :placement, [info.members, ["some key"], 0, opts])

    assert owner_on_b == Ring.lookup(Ring.new([:x, :y, {:z, 2}], vnodes: 100), "some key")
  end
end
