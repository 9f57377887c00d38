defmodule Synod.HubRaceTest do
  # Deterministic regression tests for the interleavings behind the churn
  # failures (docs/hub.md, "Churn"). A real coordinator runs in this VM; its
  # other members are fakes on real :peer nodes (Synod.Test.FakeMember),
  # whose side of docs/protocol.md the test sends by hand. With the
  # coordinator suspended where needed, each test fixes the exact order in
  # which it sees the messages, so each fails every time without its fix.
  use ExUnit.Case, async: false

  alias Synod.{Dispatcher, Ring}
  alias Synod.Hub.Placement
  alias Synod.Test.{FakeMember, HubWorker, Wait}

  @moduletag :distributed

  setup_all do
    %{nodes: Synod.Test.Cluster.peers!(2, prefix: "race")}
  end

  # Registers a fake member of `hub` on each node, then starts the real hub
  # here; returns the fakes' pids and the configuration the hub says hello
  # with (what a member must answer with).
  defp start_hub(opts, fake_nodes) do
    hub = opts[:name]
    fakes = Map.new(fake_nodes, &{&1, :erpc.call(&1, FakeMember, :start, [hub, self()])})
    start_supervised!({Synod, opts})

    hashes =
      for n <- fake_nodes do
        assert_receive {:fake, ^n, {:synod_hello, _, _, hash}}
        hash
      end

    {fakes, hd(hashes)}
  end

  # The fake on `node` says hello; the hub answers and counts it in.
  defp join(hub, node, fake, hash) do
    send(hub, {:synod_hello, node, fake, hash})
    assert_receive {:fake, ^node, {:synod_welcome, _, _, ^hash}}
    Wait.until(fn -> node in Synod.members(hub) end)
  end

  # A child id that `owner` owns when the members are `members`.
  defp id_owned_by(owner, members) do
    ring = Ring.new(members)
    Enum.find(Stream.map(1..1_000, &"race-#{&1}"), &(Placement.owners(ring, 1, &1) == [owner]))
  end

  defp spec(id), do: {HubWorker, :start_link, [id]}

  test "a child started, moved away and started again in one go: the registry names the live copy",
       %{nodes: [x | _]} do
    hub = :race_child_up
    {%{^x => fake}, hash} = start_hub([name: hub], [x])
    join(hub, x, fake, hash)
    id = id_owned_by(x, [node(), x])
    coordinator = Process.whereis(hub)

    # A caller with a stale ring sends the child here although x owns it:
    # the coordinator starts it, then moves it to x (stops it, sends x a
    # start). Then x leaves, so the child is this node's again and it starts
    # it a second time. (With the DynamicSupervisor and its start notices,
    # the notice of the first start came only after both, was taken for a
    # restart, and put the dead pid in the row: the live copy ran unknown.)
    :ok = :sys.suspend(coordinator)
    ref = make_ref()
    send(coordinator, {:synod_start, ref, [self()], [{id, spec(id), nil, :active}], []})
    send(coordinator, {:synod_bye, x})
    :ok = :sys.resume(coordinator)

    assert_receive {:synod_results, ^ref, _, [{^id, {:ok, first}}]}
    assert_receive {:fake, ^x, {:synod_start, _, _, [{^id, _, _, _}], [migration: true]}}
    :ok = GenServer.call(hub, :synod_barrier)
    refute Process.alive?(first)

    # The registry names the copy that runs, and it is the only one.
    assert [{node, pid}] = Synod.lookup(hub, id)
    assert node == node() and pid != first and Process.alive?(pid)
    assert [{_, ^pid, _, _}] = DynamicSupervisor.which_children(:"#{hub}.children")
  end

  test "rows a leave leaves with no copy reach their new owner, which never knew the leaver",
       %{nodes: [x, y]} do
    hub = :race_orphans
    {%{^x => fx, ^y => fy}, hash} = start_hub([name: hub], [x, y])
    id = id_owned_by(y, [node(), y])

    # x joins and runs the child; then y joins (here only: y and x never
    # met), and x leaves. y now owns the child, and only this node can tell.
    join(hub, x, fx, hash)
    send(hub, {:synod_registered, x, [{id, spec(id), nil, fx}], []})
    join(hub, y, fy, hash)
    send(hub, {:synod_bye, x})

    me = node()
    assert_receive {:fake, ^y, {:synod_orphans, ^me, [{^id, _, nil}]}}, 5_000
  end

  test "the owner restarts a child whose last copy was moved away and never arrived",
       %{nodes: [x | _]} do
    hub = :race_moved
    {%{^x => fake}, hash} = start_hub([name: hub], [x])
    join(hub, x, fake, hash)
    id = id_owned_by(node(), [node(), x])

    # x runs the child, then stops it to move it (on x's ring, to a member
    # that is not this node, e.g. one that is leaving): the row has no copy
    # left, and this node is its owner.
    send(hub, {:synod_registered, x, [{id, spec(id), nil, fake}], []})
    send(hub, {:synod_unregistered, x, [{id, fake}], :migrating, []})

    me = node()
    Wait.until(fn -> match?([{^me, _}], Synod.lookup(hub, id)) end, 5_000)
  end

  test "a migration to a member that leaves is given up at once: events resume, children stay",
       %{nodes: [x | _]} do
    hub = :race_gone
    {%{^x => fake}, hash} = start_hub([name: hub, migration: :hot], [x])
    ids = for i <- 1..50, do: "gone-#{i}"
    {:ok, _} = Synod.start_children(hub, for(id <- ids, do: %{id: id, start: spec(id)}))

    # x joins: the children it owns are hot-swapped to it; x never answers.
    join(hub, x, fake, hash)
    assert_receive {:fake, ^x, {:synod_start, _, _, [_ | _], [migration: true]}}
    assert {:ok, :event_queued} = Dispatcher.dispatch_event(hub, :note, 1)

    send(hub, {:synod_bye, x})
    assert {:ok, :event_dispatched} = Dispatcher.dispatch_event(hub, :note, 2)
    assert length(Synod.children(hub, :local)) == length(ids)
    assert :sys.get_state(hub).migrating == MapSet.new()
  end

  # Stops hold (docs/hub.md, "Stops"): the two interleavings of the issue's
  # fault-injection run where an acknowledged stop was undone.

  test "replication 2: a member's announcement that arrives after the stop does not restart the child",
       %{nodes: [x | _]} do
    hub = :race_late_announcement
    {%{^x => fake}, hash} = start_hub([name: hub, replication_factor: 2], [x])
    join(hub, x, fake, hash)
    # with two members and replication 2, both own every child
    id = "late-1"
    ref = make_ref()
    send(hub, {:synod_start, ref, [self()], [{id, spec(id), nil, :active}], []})
    assert_receive {:synod_results, ^ref, _, [{^id, {:ok, pid}}]}

    stop = make_ref()
    send(hub, {:synod_stop, stop, [self()], [id], []})
    assert_receive {:synod_results, ^stop, _, [{^id, {:ok, ^pid}}]}

    # x started its copy too, but its announcement was delayed past the
    # stop; then x stops its copy (the stop reached it as well). (Before:
    # the late announcement re-created the row, this node — an owner
    # without a copy — started the child again, and it ran for good.)
    send(hub, {:synod_registered, x, [{id, spec(id), nil, fake}], []})
    send(hub, {:synod_unregistered, x, [{id, fake}], :stopped, []})
    :ok = GenServer.call(hub, :synod_barrier)

    assert DynamicSupervisor.which_children(:"#{hub}.children") == []
    assert Synod.lookup(hub, id) == []
  end

  test "a stop that reaches the new owner before the moved child does holds",
       %{nodes: [x | _]} do
    hub = :race_stop_move
    {%{^x => fake}, hash} = start_hub([name: hub], [x])
    join(hub, x, fake, hash)
    id = id_owned_by(node(), [node(), x])
    coordinator = Process.whereis(hub)

    # x runs the child (started under a stale ring) and moves it here, its
    # owner. The stop reaches this node first, then x's notice that its
    # copy is moving, then x's start of the child here. (Before: the stop
    # found nothing, the notice made the owner start the child, and it ran
    # for good — the "stop racing a migration" limit.)
    send(hub, {:synod_registered, x, [{id, spec(id), nil, fake}], []})
    :ok = GenServer.call(hub, :synod_barrier)
    :ok = :sys.suspend(coordinator)
    stop = make_ref()
    send(coordinator, {:synod_stop, stop, [self()], [id], []})
    send(coordinator, {:synod_unregistered, x, [{id, fake}], :migrating, []})
    move = make_ref()

    send(
      coordinator,
      {:synod_start, move, [self()], [{id, spec(id), nil, :active}], [migration: true]}
    )

    :ok = :sys.resume(coordinator)

    assert_receive {:synod_results, ^stop, _, [{^id, _}]}
    assert_receive {:synod_results, ^move, _, [{^id, {:error, :stopped}}]}
    :ok = GenServer.call(hub, :synod_barrier)
    assert DynamicSupervisor.which_children(:"#{hub}.children") == []
    assert Synod.lookup(hub, id) == []
    # every member hears of the stop, so a copy anywhere stops too
    assert_receive {:fake, ^x, {:synod_tombstones, _, [{^id, _}]}}
  end
end
