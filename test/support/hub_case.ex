defmodule Synod.Test.HubCase do
  @moduledoc false
  # Assertions shared by the hub's cluster tests.

  alias Synod.Test.{RemoteHub, Wait}

  @doc "A pid of `node` made from its external term format (no such process runs)."
  def fake_pid(node) do
    name = Atom.to_string(node)

    :erlang.binary_to_term(
      <<131, 88, 100, byte_size(name)::16, name::binary, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1>>
    )
  end

  @doc "Starts hub `opts` on every node and waits until all see all."
  def start_hubs(nodes, opts) do
    for n <- nodes, do: {:ok, _} = :erpc.call(n, RemoteHub, :start_hub, [opts])
    await_members(nodes, opts[:name], nodes)
  end

  def await_members(on_nodes, hub, members, timeout \\ 10_000) do
    expected = Enum.sort(members)

    Wait.until(
      fn -> Enum.all?(on_nodes, &(:erpc.call(&1, Synod, :members, [hub]) == expected)) end,
      timeout
    )
  end

  @doc "What really runs, as `%{id => [node]}` (sorted nodes)."
  def running(nodes, hub) do
    nodes
    |> Enum.flat_map(fn n ->
      for id <- :erpc.call(n, RemoteHub, :running_ids, [hub]), do: {id, n}
    end)
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
    |> Map.new(fn {id, ns} -> {id, Enum.sort(ns)} end)
  end

  @doc """
  Whether every node in `nodes` sees exactly `nodes` as members, and exactly
  `ids` run, each exactly on its owners (once per owner). Checking the
  membership first matters: right after a change, the old placement still
  matches the old ring.
  """
  def placed_exactly?(nodes, hub, ids) do
    expected = Enum.sort(nodes)
    members_agree = Enum.all?(nodes, &(:erpc.call(&1, Synod, :members, [hub]) == expected))
    running = running(nodes, hub)
    owners = :erpc.call(hd(nodes), RemoteHub, :owners, [hub, ids])

    members_agree and map_size(running) == length(ids) and
      Enum.all?(ids, fn id -> Map.get(running, id) == Enum.sort(Map.fetch!(owners, id)) end)
  end

  @doc "Waits until `placed_exactly?/3`, then also until every registry agrees."
  def await_placement(nodes, hub, ids, timeout \\ 15_000) do
    Wait.until(fn -> placed_exactly?(nodes, hub, ids) end, timeout)

    Wait.until(
      fn ->
        Enum.all?(nodes, fn n -> length(:erpc.call(n, Synod, :children, [hub])) == length(ids) end)
      end,
      timeout
    )
  end
end
