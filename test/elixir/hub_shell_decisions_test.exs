defmodule Synod.HubShellDecisionsTest do
  # The decisions that the coordinator used to make inline, driven directly
  # without a coordinator or peers (ra_server_SUITE style): a restarted
  # coordinator's adoption (Synod.Hub.Adopt.plan/4), a stop's answers
  # (Requests.answer_stop/7), the tombstones' sweep (Tombstones), whether a
  # start's event is built (Events.started/4), and the grouping helper the
  # placement and the caller share (Placement.prepend/3).
  use ExUnit.Case, async: true

  alias Synod.Hub.{Adopt, Events, Placement, Requests, Tombstones}
  import Synod.Test.HubCase, only: [fake_pid: 1]

  @spec_ok {Synod.Test.HubWorker, :start_link, ["x"]}

  describe "a restarted coordinator adopts" do
    setup do
      kept = %{
        members: [:a@h, :b@h, :c@h, :d@h],
        known: MapSet.new([:a@h, :b@h, :c@h, :d@h, :e@h]),
        partitioned: false,
        ring: :the_ring,
        subs: %{},
        tombstones: [{"x", 40}, {"y", 70}, {"z", 10}]
      }

      %{kept: kept}
    end

    test "the members still connected are awaited, the ring and the books are kept", %{kept: k} do
      {fields, effects} = Adopt.plan(k, :a@h, 12, [:b@h, :c@h, :d@h, :other@h])

      assert fields == %{known: k.known, partitioned: false, ring: :the_ring, tombs: 70}

      assert effects == [
               {:log, :warning, "restarted: adopted 12 children, waiting for 3 members"},
               {:await_peer, :b@h, :nodedown},
               {:await_peer, :c@h, :nodedown},
               {:await_peer, :d@h, :nodedown}
             ]
    end

    test "members whose node went away are gone: copies dropped, events, one new ring",
         %{kept: k} do
      {fields, effects} = Adopt.plan(%{k | partitioned: true}, :a@h, 0, [:c@h])

      assert fields.partitioned == true

      assert effects == [
               {:log, :warning, "restarted: adopted 0 children, waiting for 1 members"},
               {:await_peer, :c@h, :nodedown},
               {:drop_copies, :b@h},
               {:drop_copies, :d@h},
               {:event, :member_left, {:b@h, :nodedown}},
               {:event, :member_left, {:d@h, :nodedown}},
               {:membership, {:left, [:b@h, :d@h]}}
             ]
    end

    test "alone, with no tombstones: nothing awaited, no tombstone bound", %{kept: k} do
      {fields, effects} = Adopt.plan(%{k | members: [:a@h], tombstones: []}, :a@h, 3, [])
      assert fields.tombs == false
      assert effects == [{:log, :warning, "restarted: adopted 3 children, waiting for 0 members"}]
    end
  end

  describe "a stop's answers" do
    test "a copy a tombstone stopped within 5 s counts as stopped; then stopped/6's effects" do
      p = fake_pid(:a@h)
      here = fake_pid(:me@h)
      request = {make_ref(), [self()], []}

      results = [
        {"raced", {:error, :not_found}},
        {"old", {:error, :not_found}},
        {"ran", {:ok, here}}
      ]

      stopped = [{"ran", here}]
      tombs = %{"raced" => {7, 1_000, {p, 1_000}}, "old" => {7, -4_001, {p, -4_001}}}

      {answers, effects} =
        Requests.answer_stop(
          request,
          :me@h,
          ["raced", "old", "ran"],
          9,
          {results, stopped},
          tombs,
          1_000 + 4_999
        )

      assert answers == [{"raced", {:ok, p}}, {"old", {:error, :not_found}}, {"ran", {:ok, here}}]

      assert effects ==
               Requests.stopped(request, :me@h, ["raced", "old", "ran"], 9, answers, stopped)

      # the window is 5 s: one millisecond later the raced copy is not counted
      {late, _} =
        Requests.answer_stop(
          request,
          :me@h,
          ["raced"],
          9,
          {[hd(results)], []},
          tombs,
          1_000 + 5_000
        )

      assert late == [{"raced", {:error, :not_found}}]
    end
  end

  describe "the tombstones' sweep" do
    test "only while every member known is connected; then those older than 60 s go" do
      assert Tombstones.sweep_cutoff(false, 100_000) == nil
      assert Tombstones.sweep_cutoff(true, 100_000) == 40_000
    end

    test "a predecessor's tombstones bound the incarnations they can stop" do
      assert Tombstones.bound([]) == false
      assert Tombstones.bound([{"a", 5}, {"b", 9}, {"c", 2}]) == 9
    end
  end

  describe "a start's event" do
    test "nothing for no copies; telemetry only without subscribers; else the event" do
      p = fake_pid(:b@h)
      entries = [{"a", @spec_ok, 1, p}, {"b", @spec_ok, 1, p}]

      assert Events.started(:hub, :b@h, [], true) == []
      assert Events.started(:hub, :b@h, [], false) == []

      assert Events.started(:hub, :b@h, entries, false) == [
               {:telemetry, [:synod, :hub, :children, :started], %{count: 2},
                %{hub: :hub, node: :b@h}}
             ]

      assert Events.started(:hub, :b@h, entries, true) == [
               {:event, :children_started, {:b@h, [{"a", p}, {"b", p}]}}
             ]
    end
  end

  describe "grouping per node" do
    test "prepend puts the item in front of its key's list, a new key gets a new list" do
      acc = Placement.prepend(%{}, :a, 1)
      assert acc == %{a: [1]}
      acc = acc |> Placement.prepend(:a, 2) |> Placement.prepend(:b, 3)
      assert acc == %{a: [2, 1], b: [3]}
    end
  end
end
