defmodule ReleaseExample do
  @moduledoc """
  An application on Synod, run as a release on several nodes: a hub runs
  one worker per key wherever the key hashes to, and a replicated store
  keeps a counter. `check/0` is what the test command runs on a booted
  cluster (`bin/release_example rpc "ReleaseExample.check()"`).
  """

  @doc "The hub's name."
  @spec hub() :: atom()
  def hub, do: :release_example_hub

  @doc "The store's name."
  @spec store() :: atom()
  def store, do: :release_example_store

  @doc """
  Waits (up to 60 s) until the hub and the store span every configured
  node, starts 12 workers across the cluster, writes to the store here and
  reads it back on another node, stops the workers, and prints one line.
  Raises if any of it fails.
  """
  @spec check() :: :ok
  def check do
    nodes = Enum.sort(Application.fetch_env!(:release_example, :nodes))
    wait(fn -> Synod.members(hub()) == nodes end, "the hub on #{inspect(nodes)}")
    wait(fn -> Synod.Raft.leader(store()) != nil end, "a store leader")

    specs = for i <- 1..12, do: %{id: "worker:#{i}", start: {Agent, :start_link, [fn -> i end]}}
    {:ok, %{started: started}} = Synod.start_children(hub(), specs, timeout: 10_000)
    hosts = started |> Enum.map(&elem(&1, 1)) |> Enum.uniq()

    {:ok, rev, nil} = Synod.Store.put(store(), "release/greeting", "hello")
    other = hd(nodes -- [node()])

    {:ok, %{value: "hello", mod_revision: ^rev}} =
      :erpc.call(other, Synod.Store, :get, [store(), "release/greeting"])

    {:ok, %{stopped: stopped}} = Synod.stop_children(hub(), Enum.map(specs, & &1.id))

    IO.puts(
      "release_example: ok: #{length(nodes)} nodes, #{length(started)} workers on " <>
        "#{length(hosts)} of them, #{length(stopped)} stopped, store revision #{rev} read on #{other}"
    )
  end

  defp wait(condition, what, deadline \\ System.monotonic_time(:millisecond) + 60_000) do
    cond do
      condition.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        raise "timed out waiting for #{what}"

      true ->
        Process.sleep(100)
        wait(condition, what, deadline)
    end
  end
end
