defmodule Synod.HubRequestsTest do
  # Synod.Hub.Requests driven directly, without a coordinator or peers: what
  # a start, a stop, a peer's tombstones and a peer's full picture mean, as
  # the effects the coordinator performs (in their order).
  use ExUnit.Case, async: true

  alias Synod.Hub.Requests
  import Synod.Test.HubCase, only: [fake_pid: 1]

  @spec_ok {Synod.Test.HubWorker, :start_link, ["x"]}

  setup do
    %{request: {make_ref(), [self()], []}}
  end

  describe "start" do
    test "a partitioned side refuses every child, answered with no announcement", %{request: r} do
      entries = [{"a", @spec_ok, nil, :active}, {"b", @spec_ok, 3, :passive}]
      results = [{"a", {:error, :partitioned}}, {"b", {:error, :partitioned}}]

      assert Requests.start(true, r, entries) ==
               {:refuse, results, [{:reply, r, results, [], :registered}]}
    end

    test "a client's start is a new incarnation, a member's keeps its own" do
      entries = [{"a", @spec_ok, nil, :active}]
      assert Requests.start(false, {make_ref(), [], []}, entries) == {:start, :client}

      assert Requests.start(false, {make_ref(), [], [migration: true]}, entries) ==
               {:start, :member}

      assert Requests.start(false, {make_ref(), [], [relay: :n@h, migration: true]}, entries) ==
               {:start, :member}
    end

    test "after the starts: answer with the announcement, the event, then reconcile the rows",
         %{request: r} do
      pid = self()
      results = [{"a", {:ok, pid}}, {"b", {:error, :boom}}]
      rows = [{"a", @spec_ok, nil, [pid]}]
      started = [{"a", @spec_ok, nil, pid}]

      assert Requests.started(r, :me@h, results, rows, started) == [
               {:reply, r, results, started, :registered},
               {:started_event, :me@h, started},
               {:reconcile_rows, rows}
             ]
    end
  end

  describe "stop" do
    test "a partitioned side refuses stops as it refuses starts", %{request: r} do
      results = [{"a", {:error, :partitioned}}]

      assert Requests.stop(true, r, ["a"]) ==
               {:refuse, results, [{:reply, r, results, [], :unregistered}]}

      assert Requests.stop(false, r, ["a"]) == :stop
    end

    test "tombstones first; absent ids lose their rows and go to every peer", %{request: r} do
      pid = self()
      results = [{"a", {:ok, pid}}, {"b", {:error, :not_found}}]
      stopped = [{"a", pid}]

      assert Requests.stopped(r, :me@h, ["a", "b"], 42, results, stopped) == [
               {:put_stop, ["a", "b"], 42},
               {:delete_rows, ["b"]},
               {:broadcast, {:synod_tombstones, :me@h, [{"b", 42}]}},
               {:reply, r, results, ["a"], {:stopped, 42}},
               {:event, :children_stopped, {:me@h, stopped}}
             ]
    end

    test "nothing absent and nothing stopped: no broadcast, no event", %{request: r} do
      results = [{"a", {:ok, self()}}]

      assert Requests.stopped(r, :me@h, ["a"], 7, results, []) == [
               {:put_stop, ["a"], 7},
               {:reply, r, results, [], {:stopped, 7}}
             ]
    end
  end

  describe "tombstones from a peer" do
    test "cover the rows of older incarnations; the copies here are stopped" do
      here = self()
      there = fake_pid(:other@h)

      rows = [
        # incarnation 5, a copy here and one there: covered by 9, stopped here
        {9, {"a", @spec_ok, {5, %{}}, [there, here]}},
        # incarnation 20: a start after the stop, not covered
        {9, {"b", @spec_ok, 20, [here]}},
        # covered, no copy here
        {9, {"c", @spec_ok, nil, [there]}}
      ]

      tombstones = [{"a", 9}, {"b", 9}, {"c", 9}, {"d", 9}]
      assert Requests.covered(rows, node()) == {["a", "c"], ["a"]}
      assert Requests.covered([], node()) == {[], []}

      assert Requests.tombstones_applied(:me@h, tombstones, ["a", "c"], [{"a", here}]) == [
               {:put_tombstones, tombstones, %{"a" => here}},
               {:delete_rows, ["a", "c"]},
               {:announce_stopped, [{"a", here}], :stopped},
               {:event, :children_stopped, {:me@h, [{"a", here}]}}
             ]

      assert Requests.tombstones_applied(:me@h, tombstones, ["c"], []) == [
               {:put_tombstones, tombstones, %{}},
               {:delete_rows, ["c"]},
               {:announce_stopped, [], :stopped}
             ]
    end
  end

  describe "a stop's answer" do
    test "the pids alone when asked and every id stopped, else the results as they are" do
      [p, q] = [fake_pid(:a@h), fake_pid(:b@h)]
      ok = [{"a", {:ok, p}}, {"b", {:ok, q}}]
      mixed = [{"a", {:ok, p}}, {"b", {:error, :not_found}}]
      asked = {make_ref(), [self()], [answers: :pids, relay: :r@h]}
      assert Requests.stop_answer(asked, ok) == {:stopped, [p, q]}
      assert Requests.stop_answer(asked, mixed) == mixed
      assert Requests.stop_answer(asked, []) == {:stopped, []}
      assert Requests.stop_answer({make_ref(), [self()], []}, ok) == ok

      assert [_, {:reply, ^asked, {:stopped, [^p, ^q]}, ["a", "b"], {:stopped, 7}}, _] =
               Requests.stopped(asked, :me@h, ["a", "b"], 7, ok, [{"a", p}, {"b", q}])
    end
  end

  describe "a start's answer" do
    test "the pids alone when asked and every entry has a pid, else the results as they are" do
      [p, q] = [fake_pid(:a@h), fake_pid(:b@h)]
      ok = [{"a", {:ok, p}}, {"b", {:ok, q}}]
      mixed = [{"a", {:ok, p}}, {"b", {:error, :stopped}}]
      asked = {make_ref(), [self()], [answers: :pids, relay: :r@h]}
      assert Requests.start_answer(asked, ok) == {:started, [p, q]}
      assert Requests.start_answer(asked, mixed) == mixed
      assert Requests.start_answer(asked, []) == {:started, []}
      assert Requests.start_answer({make_ref(), [self()], [migration: true]}, ok) == ok

      started = [{"a", :spec, 1, p}, {"b", :spec, 1, q}]

      assert [{:reply, ^asked, {:started, [^p, ^q]}, ^started, :registered}, _, _] =
               Requests.started(asked, :me@h, ok, [], started)

      assert [{:reply, _, ^mixed, _, :registered}, _, _] =
               Requests.started(asked, :me@h, mixed, [], started)
    end
  end

  describe "a peer's stop request applied here" do
    test "a tombstone per id with the copies it stopped here; covered rows go; stops announced" do
      here = self()

      assert Requests.stops_applied(:me@h, ["a", "b", "c"], 9, ["a", "c"], [{"a", here}]) == [
               {:put_stop_ids, ["a", "b", "c"], 9, %{"a" => here}},
               {:delete_rows, ["a", "c"]},
               {:announce_stopped, [{"a", here}], :stopped},
               {:event, :children_stopped, {:me@h, [{"a", here}]}}
             ]
    end

    test "nothing covered here (the usual case): only the tombstones" do
      assert Requests.stops_applied(:me@h, ["a"], 9, [], []) == [{:put_stop_ids, ["a"], 9, %{}}]
    end
  end

  describe "a peer's full picture" do
    test "new copies are events, changed rows reconciled, copyless rows sent on, then healed" do
      p = fake_pid(:peer@h)
      entries = [{"a", @spec_ok, nil, p}, {"b", @spec_ok, nil, p}]
      stale = [{"x", @spec_ok, nil, []}, {"y", @spec_ok, nil, [self()]}]
      rows = [{"a", @spec_ok, nil, [p]}, {"b", @spec_ok, nil, [p]}]
      added = [{"o", @spec_ok, nil, []}]

      assert Requests.synced(:peer@h, entries, stale, rows, added, ["a"]) == [
               {:started_event, :peer@h, [{"b", @spec_ok, nil, p}]},
               {:reconcile_rows, stale ++ rows ++ added},
               :send_orphans,
               :synced
             ]

      # no stale row left without a copy: no orphans sent
      assert Requests.synced(:peer@h, entries, tl(stale), rows, [], ["a", "b"]) == [
               {:started_event, :peer@h, []},
               {:reconcile_rows, tl(stale) ++ rows},
               :synced
             ]
    end
  end

  describe "local starts and stops, planned from what the shell read" do
    test "a plan per entry: running here, a stopped move, a new incarnation, a kept one" do
      me = :a@h
      here = fake_pid(me)
      there = fake_pid(:b@h)

      entries = [
        {"run", @spec_ok, 3, :active},
        {"new", @spec_ok, nil, :active},
        {"after_stop", @spec_ok, 4, :passive},
        {"kept", @spec_ok, 9, :active}
      ]

      rows = [{"run", @spec_ok, 3, [here]}, nil, nil, {"kept", @spec_ok, 9, [there]}]
      stamps = %{"after_stop" => 4}

      assert {plan, 9} = Requests.plan_starts(:client, entries, rows, stamps, me, 100)

      assert plan == [
               {:running, "run", here},
               {:start, "new", @spec_ok, 100, :active, []},
               {:start, "after_stop", @spec_ok, 100, :passive, []},
               {:start, "kept", @spec_ok, 9, :active, [there]}
             ]

      assert Requests.to_start(plan) ==
               [{"new", @spec_ok}, {"after_stop", @spec_ok}, {"kept", @spec_ok}]

      # a member's move keeps its incarnation and is refused once stopped
      assert {[{:stopped, "after_stop"}], 4} =
               Requests.plan_starts(:member, [Enum.at(entries, 2)], [nil], stamps, me, 100)
    end

    test "the supervisor's answers merged: results in order, rows, new copies, modes" do
      there = fake_pid(:b@h)
      p1 = self()

      plan = [
        {:running, "run", there},
        {:stopped, "gone"},
        {:start, "ok", @spec_ok, 7, :passive, [there]},
        {:start, "bad", @spec_ok, 8, :active, []}
      ]

      answers = [{"ok", {:ok, p1}}, {"bad", {:error, :boom}}]

      assert Requests.merge_starts(plan, answers) == {
               [
                 {"run", {:ok, there}},
                 {"gone", {:error, :stopped}},
                 {"ok", {:ok, p1}},
                 {"bad", {:error, :boom}}
               ],
               [{"ok", @spec_ok, 7, [p1, there]}],
               [{"ok", @spec_ok, 7, p1}],
               [{p1, :passive}]
             }
    end

    test "stops: absent ids answer :not_found; the reason decides whether the row stays" do
      me = :a@h
      here = fake_pid(me)
      there = fake_pid(:b@h)

      rows = [
        {"solo", @spec_ok, 1, [here]},
        {"pair", @spec_ok, 2, [here, there]},
        {"elsewhere", @spec_ok, 3, [there]},
        nil
      ]

      plan = Requests.plan_stops(["solo", "pair", "elsewhere", "none"], rows, me)

      assert plan == [
               {:stop, "solo", @spec_ok, 1, here, []},
               {:stop, "pair", @spec_ok, 2, here, [there]},
               {:absent, "elsewhere"},
               {:absent, "none"}
             ]

      assert Requests.to_stop(plan) == ["solo", "pair"]

      results = [
        {"solo", {:ok, here}},
        {"pair", {:ok, here}},
        {"elsewhere", {:error, :not_found}},
        {"none", {:error, :not_found}}
      ]

      stopped = [{"solo", here}, {"pair", here}]

      # a stop request deletes every row
      assert Requests.merge_stops(plan, {:stopped, 5}) ==
               {results, stopped, [], ["solo", "pair"]}

      # an exit keeps a row that still has a copy
      assert Requests.merge_stops(plan, :stopped) ==
               {results, stopped, [{"pair", @spec_ok, 2, [there]}], ["solo"]}

      # a move or a suspension keeps every row
      assert Requests.merge_stops(plan, :migrating) ==
               {results, stopped, [{"solo", @spec_ok, 1, []}, {"pair", @spec_ok, 2, [there]}], []}
    end
  end

  describe "a stop racing another member's tombstone" do
    test "a copy a tombstone stopped within the window answers as stopped by this request" do
      p = fake_pid(:a@h)

      results = [
        {"raced", {:error, :not_found}},
        {"old", {:error, :not_found}},
        {"nopid", {:error, :not_found}},
        {"none", {:error, :not_found}},
        {"ran", {:ok, p}}
      ]

      tombs = %{
        "raced" => {7, 1_000, {p, 1_000}},
        "old" => {7, -5_000, {p, -5_000}},
        "nopid" => {7, 1_000, nil}
      }

      assert Requests.raced(results, tombs, 1_500, 5_000) == [
               {"raced", {:ok, p}},
               {"old", {:error, :not_found}},
               {"nopid", {:error, :not_found}},
               {"none", {:error, :not_found}},
               {"ran", {:ok, p}}
             ]

      assert Requests.raced(results, %{}, 1_500, 5_000) == results
    end

    test "a later tombstone of the id moves its time, not its copy's: an old copy is not raced" do
      # A peer's tombstone stopped the copy here at 1_000; a later stop of
      # the same id (another request, its stamp above) is recorded at
      # 8_000. A stop request that finds no copy at 8_500 did not race the
      # first stop (7.5 s ago): it answers :not_found, though the
      # tombstone was recorded 0.5 s ago. One that races the second stop
      # within the window, had it stopped a copy, would answer with it.
      meta = :ets.new(:meta, [:set])
      p = self()
      :ok = Synod.Hub.Tombstones.record(meta, [{"x", 10}], %{"x" => p}, 1_000)
      :ok = Synod.Hub.Tombstones.record(meta, [{"x", 20}], %{}, 8_000)
      assert {20, 8_000, {^p, 1_000}} = Synod.Hub.Tombstones.lookup(meta, "x")

      results = [{"x", {:error, :not_found}}]
      tombs = %{"x" => Synod.Hub.Tombstones.lookup(meta, "x")}
      assert Requests.raced(results, tombs, 8_500, 5_000) == results
      # within the window of the copy's own stop, it is the answer
      assert Requests.raced(results, tombs, 5_999, 5_000) == [{"x", {:ok, p}}]

      # the later tombstone stopping a copy here too: that copy, with its time
      q = spawn(fn -> :ok end)
      :ok = Synod.Hub.Tombstones.record(meta, [{"x", 30}], %{"x" => q}, 9_000)
      tombs = %{"x" => Synod.Hub.Tombstones.lookup(meta, "x")}
      assert Requests.raced(results, tombs, 9_500, 5_000) == [{"x", {:ok, q}}]
    end
  end
end
