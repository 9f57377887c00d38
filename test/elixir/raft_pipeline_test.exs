defmodule Synod.RaftPipelineTest do
  # The asynchronous command API (Synod.Raft.Pipeline, issue 18) on real
  # peers: many commands in flight from a node with no member, each applied
  # once and answered once; a full window says :busy; the leader killed with
  # commands in flight; an unknown group named at once.
  use ExUnit.Case, async: false

  alias Synod.Raft.Pipeline
  alias Synod.Test.Raft

  @moduletag timeout: 120_000

  setup_all do
    ctx = Raft.start_cluster("rp", 0, &start_kv/3)
    on_exit(fn -> Raft.stop_cluster(ctx) end)
    {:ok, group: ctx.name, nodes: ctx.nodes, leader: ctx.leader}
  end

  def start_kv(group, nodes, dir),
    do: Synod.Raft.start_group(group, nodes, dir, machine: Synod.Raft.KV)

  test "5,000 commands with 1,000 in flight: each applied once, answered once", %{group: g} do
    {results, _us} = Raft.pipelined(g, 5_000, 1_000, fn _ -> {:incr, :n, 1} end)
    assert length(results) == 5_000
    assert results |> Enum.map(fn {:ok, v} -> v end) |> Enum.sort() == Enum.to_list(1..5_000)
    assert {:ok, 5_000} = Synod.Raft.query(g, {Map, :get, [:n]})
  end

  test "a full window answers :busy and sends nothing", %{group: g} do
    pipe = Pipeline.new(g, window: 2)
    {:ok, r1, pipe} = Pipeline.send(pipe, {:incr, :w, 1})
    {:ok, r2, pipe} = Pipeline.send(pipe, {:incr, :w, 1})
    assert {:error, :busy} = Pipeline.send(pipe, {:incr, :w, 1})
    assert Pipeline.in_flight(pipe) == 2
    assert Pipeline.check(pipe, {make_ref(), :not_an_answer}) == :not_mine
    {:ok, a, {:ok, _}, pipe} = Pipeline.next(pipe, 10_000)
    {:ok, b, {:ok, _}, pipe} = Pipeline.next(pipe, 10_000)
    assert Enum.sort([a, b]) == Enum.sort([r1, r2])
    assert {:timeout, _} = Pipeline.next(pipe, 0)
    assert {:ok, 2} = Synod.Raft.query(g, {Map, :get, [:w]})
    assert_raise ArgumentError, fn -> Pipeline.new(g, window: 0) end
  end

  test "an unknown group is named at once" do
    assert {:error, {:unknown_group, :no_such_group}} =
             Pipeline.send(Pipeline.new(:no_such_group, timeout: 60_000), :x)
  end
end

defmodule Synod.RaftPipelineFailoverTest do
  # The pipeline while the group's leader is killed.
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.Raft

  @moduletag timeout: 120_000

  setup do
    ctx = Raft.start_cluster("rpf", 0, &Synod.RaftPipelineTest.start_kv/3)
    on_exit(fn -> Raft.stop_cluster(ctx) end)
    {:ok, group: ctx.name, nodes: ctx.nodes, leader: ctx.leader}
  end

  test "the leader killed with commands in flight: each still applied once",
       %{group: g, nodes: nodes, leader: leader} do
    me = self()
    on_sent = fn i -> if i == 1_000, do: send(me, :sent_1000) end

    task =
      Task.async(fn -> Raft.pipelined(g, 3_000, 500, fn _ -> {:incr, :k, 1} end, on_sent) end)

    assert_receive :sent_1000, 30_000
    LocalCluster.kill(leader)
    {results, _} = Task.await(task, 120_000)

    ok = for {:ok, v} <- results, do: v
    assert length(ok) == 3_000, inspect(Enum.reject(results, &match?({:ok, _}, &1)))
    assert Enum.sort(ok) == Enum.to_list(1..3_000)
    [survivor | _] = nodes -- [leader]
    assert {:ok, 3_000} = :erpc.call(survivor, Synod.Raft, :query, [g, {Map, :get, [:k]}])
  end
end
