defmodule Synod.HubAnnouncementsTest do
  # Synod.Hub.Announcements driven directly, without a coordinator or peers
  # (ra_server_SUITE style): what a peer's announcements and a local child's
  # exit mean, as the effects the coordinator performs, in their order.
  use ExUnit.Case, async: true

  alias Synod.Hub.{Announcements, Registry}
  import Synod.Test.HubCase, only: [fake_pid: 1]

  @spec_ok {Synod.Test.HubWorker, :start_link, ["x"]}

  setup do
    pid = fake_pid(:b@h)
    replies = [{make_ref(), [self()], [{"a", {:ok, pid}}]}]
    %{pid: pid, replies: replies, entries: [{"a", @spec_ok, 5, pid}]}
  end

  describe "live" do
    test "drops what a tombstone covers, keeps later incarnations and unknown ids", %{pid: pid} do
      list = [{"a", @spec_ok, 5, pid}, {"b", @spec_ok, 9, pid}, {"c", @spec_ok, 3, pid}]
      assert Announcements.live(list, %{}) == list
      assert Announcements.live(list, %{"a" => 5, "b" => 8}) == tl(list)
      assert Announcements.live(list, %{"a" => 4}) == list
    end

    test "orphans (three fields) are filtered the same way" do
      assert Announcements.live([{"a", @spec_ok, 5}, {"b", @spec_ok, 5}], %{"b" => 6}) ==
               [{"a", @spec_ok, 5}]
    end
  end

  describe "synod_registered" do
    test "from a peer the copies are recorded before anything else", c do
      assert Announcements.registered(true, :b@h, c.entries, c.replies) ==
               [{:put_copies, :b@h, c.entries, c.replies}]
    end

    test "then the answers, the event and the rows decided again, in that order", c do
      rows = [{"a", @spec_ok, 5, [c.pid]}]

      assert Announcements.copies_put(:b@h, c.entries, rows, c.replies) == [
               {:deliver_replies, c.replies, :b@h},
               {:started_event, :b@h, c.entries},
               {:reconcile_rows, rows}
             ]

      assert Announcements.copies_put(:b@h, c.entries, rows, []) == [
               {:started_event, :b@h, c.entries},
               {:reconcile_rows, rows}
             ]
    end

    test "all new rows: with one copy per child none is decided again, else rows built", c do
      assert Announcements.copies_put(:b@h, c.entries, :new, c.replies, 1) == [
               {:deliver_replies, c.replies, :b@h},
               {:started_event, :b@h, c.entries}
             ]

      rows = for {id, spec, slot, pid} <- c.entries, do: {id, spec, slot, [pid]}

      assert Announcements.copies_put(:b@h, c.entries, :new, [], 2) == [
               {:started_event, :b@h, c.entries},
               {:reconcile_rows, rows}
             ]

      stored = [{"a", @spec_ok, 5, [c.pid, c.pid]}]

      assert Announcements.copies_put(:b@h, c.entries, stored, [], 1) ==
               Announcements.copies_put(:b@h, c.entries, stored, [])
    end

    test "from a node that is no peer only the answers go out, no row changes", c do
      assert Announcements.registered(false, :b@h, c.entries, c.replies) ==
               [{:deliver_replies, c.replies, :b@h}]

      assert Announcements.registered(false, :b@h, c.entries, []) == []
    end
  end

  describe "synod_stopped" do
    test "from a peer the copies leave their rows first; from another node only the answers", c do
      assert Announcements.stopped(true, :b@h, 42, ["a"], c.replies) ==
               [{:remove_stopped, :b@h, 42, ["a"], c.replies}]

      assert Announcements.stopped(false, :b@h, 42, ["a"], c.replies) ==
               [{:deliver_replies, c.replies, :b@h}]

      assert Announcements.stopped(false, :b@h, 42, ["a"], []) == []
    end

    test "then the event, the stop applied here for good, and the answers, in that order", c do
      gone = [{"a", c.pid}]
      rows = [{"b", @spec_ok, 5, [fake_pid(:c@h)]}]

      assert Announcements.stops_removed(:b@h, 42, ["a", "b"], gone, rows, c.replies) == [
               {:event, :children_stopped, {:b@h, gone}},
               {:apply_stop, ["a", "b"], 42, rows},
               {:deliver_replies, c.replies, :b@h}
             ]

      # no copy was known here: no event, the tombstones still recorded
      assert Announcements.stops_removed(:b@h, 42, ["a"], [], [], []) ==
               [{:apply_stop, ["a"], 42, []}]
    end
  end

  describe "synod_unregistered" do
    test "from a peer the copies leave their rows first", c do
      stopped = [{"a", c.pid}]

      assert Announcements.unregistered(true, :b@h, stopped, :migrating, c.replies) ==
               [{:remove_copies, :b@h, stopped, :migrating, c.replies}]

      assert Announcements.unregistered(false, :b@h, stopped, :migrating, c.replies) ==
               [{:deliver_replies, c.replies, :b@h}]
    end

    test "a copy that exited takes its other copies along: nothing is reconciled", c do
      rows = [{"a", @spec_ok, 5, [fake_pid(:c@h)]}]

      assert Announcements.copies_removed(:b@h, [{"a", c.pid}], :stopped, rows, []) ==
               [{:event, :children_stopped, {:b@h, [{"a", c.pid}]}}]
    end

    test "a copy that moves or is suspended must run again: its row is decided again", c do
      rows = [{"a", @spec_ok, 5, []}]

      for reason <- [:migrating, :suspended] do
        assert Announcements.copies_removed(:b@h, [{"a", c.pid}], reason, rows, []) == [
                 {:event, :children_stopped, {:b@h, [{"a", c.pid}]}},
                 {:reconcile_rows, rows}
               ]
      end
    end

    test "an announcement with nothing stopped still delivers its answers", c do
      assert Announcements.copies_removed(:b@h, [], :stopped, [], c.replies) ==
               [{:deliver_replies, c.replies, :b@h}]
    end
  end

  describe "orphans, tombstones and a peer's full picture" do
    test "orphans from a peer add the missing rows, which are decided again" do
      orphans = [{"a", @spec_ok, 5}]
      assert Announcements.orphans(true, orphans) == [{:add_orphans, orphans}]
      assert Announcements.orphans(false, orphans) == []
      rows = [{"a", @spec_ok, 5, []}]
      assert Announcements.orphans_added(rows) == [{:reconcile_rows, rows}]
    end

    test "tombstones apply from a peer only, and none means nothing" do
      assert Announcements.tombstones(true, [{"a", 1}]) == [{:apply_tombstones, [{"a", 1}]}]
      assert Announcements.tombstones(true, []) == []
      assert Announcements.tombstones(false, [{"a", 1}]) == []
    end

    test "a sync applies its tombstones before its picture is compared", c do
      orphans = [{"o", @spec_ok, 2}]

      assert Announcements.sync(true, :b@h, c.entries, orphans, [{"z", 7}]) == [
               {:apply_tombstones, [{"z", 7}]},
               {:compare_sync, :b@h, c.entries, orphans}
             ]

      assert Announcements.sync(true, :b@h, c.entries, orphans, []) ==
               [{:compare_sync, :b@h, c.entries, orphans}]

      assert Announcements.sync(false, :b@h, c.entries, orphans, [{"z", 7}]) == []
    end
  end

  describe "a local child's exit" do
    test "restarted: the row names the new pid, the copy learns its mode, peers hear of it" do
      old = fake_pid(:a@h)
      new = fake_pid(:a@h)
      other = fake_pid(:b@h)
      row = {"a", @spec_ok, 5, [old, other]}

      assert Announcements.child_exited(:a@h, row, old, new, :passive) == [
               {:put_row, Registry.replace_pid(row, old, new)},
               {:tell_mode, new, :passive},
               {:broadcast_registered, [{"a", @spec_ok, 5, new}]},
               {:event, :children_started, {:a@h, [{"a", new}]}}
             ]
    end

    test "gone: the copy leaves its row as an exit, announced as :stopped" do
      old = fake_pid(:a@h)
      row = {"a", @spec_ok, 5, [old]}

      assert Announcements.child_exited(:a@h, row, old, nil, :active) == [
               {:remove_copy, "a", old, :stopped},
               {:announce_stopped, [{"a", old}], :stopped},
               {:event, :children_stopped, {:a@h, [{"a", old}]}}
             ]
    end
  end
end
