defmodule Synod.HubClusterTest do
  # The hub on three real :peer nodes: start and stop with await, results,
  # errors, timeouts, rollback, lookups, events and the dispatcher.
  use ExUnit.Case, async: false

  import Synod.Test.HubCase
  alias Synod.{StartResult, StopResult}
  alias Synod.Test.{RemoteHub, Wait}

  @moduletag :distributed
  @moduletag timeout: 120_000

  setup_all do
    nodes = Synod.Test.Cluster.peers!(3, prefix: "hub")
    start_hubs(nodes, name: :hub_main)
    %{nodes: nodes}
  end

  defp call(node, fun, args), do: :erpc.call(node, Synod, fun, args, 60_000)

  test "start and stop 10k children with await; every one runs once, on its owner", %{
    nodes: [a, b, c] = nodes
  } do
    assert {:ok, %StartResult{started: started, errors: []}} =
             :erpc.call(
               a,
               RemoteHub,
               :start_many,
               [:hub_main, "bulk", 10_000, [timeout: 60_000]],
               60_000
             )

    assert length(started) == 10_000
    ids = RemoteHub.ids("bulk", 10_000)
    # the answer already reflects placement: each child on its ring owner
    owners = :erpc.call(b, RemoteHub, :owners, [:hub_main, ids])

    assert Enum.all?(started, fn {id, node, pid} -> owners[id] == [node] and node(pid) == node end)

    # the caller's node has every child in its registry once it has the answer
    assert length(call(a, :children, [:hub_main])) == 10_000
    assert placed_exactly?(nodes, :hub_main, ids)
    # every node answers lookups locally, identically, once the sync arrived
    await_placement(nodes, :hub_main, ids)
    {id, node, pid} = hd(started)
    assert call(c, :whereis, [:hub_main, id]) == pid
    assert call(b, :lookup, [:hub_main, id]) == [{node, pid}]
    local = call(node, :children, [:hub_main, :local])
    assert {id, pid} in local
    assert Enum.sum(for n <- nodes, do: length(call(n, :children, [:hub_main, :local]))) == 10_000

    assert {:ok, %StopResult{stopped: stopped, errors: []}} =
             call(b, :stop_children, [:hub_main, ids, [timeout: 60_000]])

    assert length(stopped) == 10_000
    assert running(nodes, :hub_main) == %{}
    Wait.until(fn -> Enum.all?(nodes, &(call(&1, :children, [:hub_main]) == [])) end)
  end

  test "invalid specs are rejected before anything is sent, with a reason per child", %{
    nodes: [a | _] = nodes
  } do
    specs = [
      RemoteHub.spec("ok-1"),
      %{id: "no-start"},
      %{id: "bad-start", start: :nope},
      {NoSuchModule, []}
    ]

    assert {:error, {:invalid_children, bad}} = call(a, :start_children, [:hub_main, specs])

    assert [
             {"no-start", :missing_start},
             {"bad-start", {:invalid_start, :nope}},
             {{NoSuchModule, []}, {:invalid_child_spec, _}}
           ] = bad

    assert running(nodes, :hub_main) == %{}
  end

  test "duplicate and existing ids, unknown hubs", %{nodes: [a, b | _]} do
    assert {:error, {:duplicate_ids, ["d1"]}} =
             call(a, :start_children, [
               :hub_main,
               [RemoteHub.spec("d1"), RemoteHub.spec("d2"), RemoteHub.spec("d1")]
             ])

    assert {:ok, %StartResult{}} = call(a, :start_children, [:hub_main, [RemoteHub.spec("d1")]])

    assert {:error, {:already_started, ["d1"]}} =
             call(a, :start_children, [:hub_main, [RemoteHub.spec("d1"), RemoteHub.spec("d3")]])

    # without the check the owner answers with the copy that runs: never a second one
    pid = call(a, :whereis, [:hub_main, "d1"])

    assert {:ok, %StartResult{started: [{"d1", _, ^pid}]}} =
             call(b, :start_children, [:hub_main, [RemoteHub.spec("d1")], [check_existing: false]])

    assert {:ok, _} = call(a, :stop_child, [:hub_main, "d1"])

    assert {:error, %StopResult{stopped: [], errors: [{"d1", _, :not_found}]}} =
             call(a, :stop_child, [:hub_main, "d1"])

    assert {:error, {:unknown_hub, :nope}} =
             call(a, :start_children, [:nope, [RemoteHub.spec("x")]])

    assert {:error, {:unknown_hub, :nope}} = call(a, :stop_children, [:nope, ["x"]])

    assert {:exception, %ArgumentError{message: "unknown hub :nope" <> _}, _} =
             catch_error(call(a, :whereis, [:nope, "x"]))

    assert {:exception, %ArgumentError{message: "invalid option timeout" <> _}, _} =
             catch_error(call(a, :start_children, [:hub_main, [], [timeout: -1]]))

    assert {:exception, %ArgumentError{message: "unknown option :bogus" <> _}, _} =
             catch_error(call(a, :start_children, [:hub_main, [], [bogus: 1]]))
  end

  test "child start errors are reported per child; :rollback stops the rest", %{
    nodes: [a | _] = nodes
  } do
    specs = [RemoteHub.spec("r1"), RemoteHub.spec("r2", :fail), RemoteHub.spec("r3")]

    assert {:error, %StartResult{started: started, errors: [{"r2", _, {:refused, "r2"}}]}} =
             call(a, :start_children, [:hub_main, specs])

    assert started |> Enum.map(&elem(&1, 0)) |> Enum.sort() == ["r1", "r3"]
    assert Map.keys(running(nodes, :hub_main)) == ["r1", "r3"]
    assert {:ok, _} = call(a, :stop_children, [:hub_main, ["r1", "r3"]])

    assert {:error, %StartResult{rolled_back: true, errors: [{"r2", _, _}]}} =
             call(a, :start_children, [:hub_main, specs, [on_failure: :rollback]])

    assert running(nodes, :hub_main) == %{}
    Wait.until(fn -> Enum.all?(nodes, &(call(&1, :children, [:hub_main]) == [])) end)
  end

  test "a node that does not answer in time is an error for its children, never a hang", %{
    nodes: [a, b | _] = nodes
  } do
    ids = RemoteHub.ids("slow", 300)
    owners = :erpc.call(a, RemoteHub, :owners, [:hub_main, ids])
    coordinator = :erpc.call(b, Process, :whereis, [:hub_main])
    :ok = :erpc.call(b, :sys, :suspend, [coordinator])

    try do
      {time, {:error, %StartResult{started: started, errors: errors}}} =
        :timer.tc(fn ->
          call(a, :start_children, [:hub_main, Enum.map(ids, &RemoteHub.spec/1), [timeout: 300]])
        end)

      assert time < 5_000_000
      on_b = for {id, [^b]} <- owners, do: id
      assert Enum.sort(for {id, ^b, :timeout} <- errors, do: id) == Enum.sort(on_b)
      assert length(started) + length(on_b) == 300
    after
      :erpc.call(b, :sys, :resume, [coordinator])
    end

    # the late answer still started them: nothing is lost or duplicated
    await_placement(nodes, :hub_main, ids)
    assert {:ok, _} = call(a, :stop_children, [:hub_main, ids])
  end

  test "an awaitable handle; tags; owners", %{nodes: [a, b, c] = nodes} do
    specs = for i <- 1..20, do: RemoteHub.spec("t#{i}")

    {:ok, result} =
      :erpc.call(a, Synod.Test.HubHandle, :start_then_await, [
        :hub_main,
        specs,
        [metadata: %{tag: :blue}]
      ])

    assert {:ok, %StartResult{started: started}} = result
    assert length(started) == 20
    Wait.until(fn -> length(call(c, :tagged, [:hub_main, :blue])) == 20 end)
    assert call(b, :tagged, [:hub_main, :red]) == []
    [{id, [{node, _pid}]} | _] = call(b, :tagged, [:hub_main, :blue])
    assert call(c, :owners, [:hub_main, id]) == [node]
    assert {:ok, _} = call(a, :stop_children, [:hub_main, Enum.map(specs, & &1.id)])
    assert running(nodes, :hub_main) == %{}
  end

  test "events reach exactly the requested members", %{nodes: [a, b, c]} do
    for n <- [a, b, c],
        do:
          {:ok, _} =
            :erpc.call(n, RemoteHub, :forward_events, [
              :hub_main,
              self(),
              [:ping, :children_started]
            ])

    assert {:ok, :event_dispatched} =
             :erpc.call(a, Synod.Dispatcher, :dispatch_event, [:hub_main, :ping, 1, []])

    assert_receive {:forwarded, ^a, {:synod, :hub_main, :ping, 1}}

    :ok =
      :erpc.call(a, Synod.Dispatcher, :propagate_event, [
        :hub_main,
        {:ping, 2},
        [members: :external]
      ])

    assert_receive {:forwarded, ^b, {:synod, :hub_main, :ping, 2}}
    assert_receive {:forwarded, ^c, {:synod, :hub_main, :ping, 2}}

    :ok =
      :erpc.call(a, Synod.Dispatcher, :propagate_event, [:hub_main, {:ping, 3}, [members: [c]]])

    assert_receive {:forwarded, ^c, {:synod, :hub_main, :ping, 3}}

    :ok =
      :erpc.call(b, Synod.Dispatcher, :propagate_event, [
        :hub_main,
        {:ping, 4},
        [members: :global]
      ])

    for n <- [a, b, c], do: assert_receive({:forwarded, ^n, {:synod, :hub_main, :ping, 4}})

    # a marker sent last: anything misdelivered earlier would arrive before it
    :ok =
      :erpc.call(a, Synod.Dispatcher, :propagate_event, [
        :hub_main,
        {:ping, :end},
        [members: :global]
      ])

    for n <- [a, b, c], do: assert_receive({:forwarded, ^n, {:synod, :hub_main, :ping, :end}})
    refute_received {:forwarded, _, {:synod, :hub_main, :ping, _}}

    # hub events: every member hears of every start
    {:ok, _} = call(a, :start_child, [:hub_main, RemoteHub.spec("ev1")])

    for n <- [a, b, c] do
      assert_receive {:forwarded, ^n, {:synod, :hub_main, :children_started, {_, [{"ev1", _}]}}},
                     5_000
    end

    {:ok, _} = call(a, :stop_child, [:hub_main, "ev1"])
    assert :ok = :erpc.call(a, Synod.Dispatcher, :reply_respondents, [[self()], :k, "id", :r, a])
    assert_receive {:k, "id", :r, ^a}
  end

  test "the protocol works with GenServer.call and no library", %{nodes: [a | _]} do
    # the test VM runs no hub: it is an outside BEAM node speaking plain terms
    assert {:ok, members} = GenServer.call({:hub_main, a}, :members)
    assert a in members
    assert {:ok, ^members, vnodes, seed, 1} = GenServer.call({:hub_main, a}, :ring_info)
    ring = Synod.Ring.new(members, vnodes: vnodes, seed: seed)
    owner = Synod.Ring.lookup(ring, "plain-1")
    spec = {Synod.Test.HubWorker, :start_link, ["plain-1"]}

    assert {:ok, [{"plain-1", {:ok, pid}}]} =
             GenServer.call(
               {:hub_main, owner},
               {:start_children, [{"plain-1", spec, nil, :active}]}
             )

    assert node(pid) == owner
    Wait.until(fn -> GenServer.call({:hub_main, a}, {:whereis, "plain-1"}) == {:ok, [pid]} end)

    # the batched cast form answers every reply_to pid
    ref = make_ref()
    send({:hub_main, owner}, {:synod_stop, ref, [self()], ["plain-1", "ghost"], []})

    assert_receive {:synod_results, ^ref, ^owner,
                    [{"plain-1", {:ok, ^pid}}, {"ghost", {:error, :not_found}}]}
  end
end
