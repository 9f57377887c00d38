defmodule Synod.RaftWalPendingTest do
  # Synod.Raft.Wal.Pending (pure): which Ready seq a `log: :wal` member may
  # confirm to its core (raft_persisted) when a WAL notice comes.
  use ExUnit.Case, async: true

  alias Synod.Raft.Wal.Pending

  test "a notice confirms the newest Ready whose append it covers, and no later one" do
    p = Pending.new()
    assert {nil, [], p} = Pending.written(p, 1, 100, :a)
    assert {nil, [], p} = Pending.written(p, 2, 105, :b)
    assert {nil, [], p} = Pending.written(p, 3, 110, :c)
    assert Pending.size(p) == 3

    # a notice below every append confirms nothing
    assert {nil, [], p} = Pending.synced(p, 99)
    # 105 covers appends 100 and 105 (the WAL keeps a member's order)
    assert {2, [:a, :b], p} = Pending.synced(p, 107)
    assert Pending.size(p) == 1
    # an old notice arriving late changes nothing
    assert {nil, [], p} = Pending.synced(p, 105)
    assert {3, [:c], p} = Pending.synced(p, 110)
    assert Pending.size(p) == 0
    assert {nil, [], _} = Pending.synced(p, 200)
  end

  test "a Ready that wrote nothing of its own is durable once everything before it is" do
    # nothing in flight: at once
    assert {4, [nil], p} = Pending.written(Pending.new(), 4, nil)
    # behind an append in flight: with that append's notice
    {nil, [], p} = Pending.written(p, 5, 20)
    assert {nil, [], p} = Pending.written(p, 6, nil)
    assert {6, [nil, nil], p} = Pending.synced(p, 20)
    assert Pending.size(p) == 0
  end

  test "a stuck member's buffered Ready waits for durable/1, not for a notice" do
    {nil, [], p} = Pending.written(Pending.new(), 1, 10)
    {nil, [], p} = Pending.written(p, 2, :buffered)
    {nil, [], p} = Pending.written(p, 3, nil)
    # the notice covers the first append only; the buffered one holds the rest
    assert {1, [nil], p} = Pending.synced(p, 1_000)
    assert Pending.size(p) == 2
    # the synchronous retry succeeded: everything so far
    assert {3, [nil, nil], p} = Pending.durable(p)
    assert {nil, [], _} = Pending.durable(p)
  end

  test "durable/1 with writes still in flight confirms the newest (a snapshot install)" do
    {nil, [], p} = Pending.written(Pending.new(), 7, 1)
    {nil, [], p} = Pending.written(p, 8, 2)
    {nil, [], p} = Pending.written(p, 9, :buffered)
    assert {9, [nil, nil, nil], p} = Pending.durable(p)
    # their notices come later and confirm nothing again
    assert {nil, [], _} = Pending.synced(p, 2)
  end
end
