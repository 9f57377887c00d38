defmodule Synod.CoordLeaderWatchTest do
  # Leader watches (Synod.add_leader_watch/4) on a one-voter group of this
  # node: the member's whole view before and after, and arguments checked.
  use ExUnit.Case, async: false

  setup do
    Synod.LocalCluster.ensure_distributed()
    dir = Path.join(System.tmp_dir!(), "synod-lw-#{System.unique_integer([:positive])}")
    group = :"lw#{System.unique_integer([:positive])}"
    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, dir: dir, group: group}
  end

  test "a watch gets the member's whole view: role, leader, term, indexes, voters", ctx do
    %{group: g, dir: dir} = ctx

    # Without fast failover the first election waits a whole election
    # timeout: the watch is in place long before.
    {:ok, _} =
      Synod.Raft.start_member(
        name: g,
        voters: [node()],
        data_dir: dir,
        machine: Synod.Raft.KV,
        fast_failover: false
      )

    :ok = Synod.add_leader_watch(g, :view, self(), :become_leader)
    assert_receive {:synod_leader_watch, ^g, :view, :become_leader, before, after_}, 10_000

    me = node()

    assert %{role: :leader, leader: ^me, term: term, commit: commit, applied: applied} = after_
    assert after_.voters == [me]
    assert term >= 1 and is_integer(commit) and is_integer(applied)
    assert %{role: role, commit: _, applied: _, voters: [^me]} = before
    assert role != :leader
    :ok = Synod.Raft.stop_member(g)
  end

  test "bad arguments raise ArgumentError naming the argument", %{group: g} do
    assert_raise ArgumentError, ~r/argument group/, fn ->
      Synod.add_leader_watch("g", :k, self())
    end

    assert_raise ArgumentError, ~r/argument target/, fn ->
      Synod.add_leader_watch(g, :k, fn _ -> :ok end)
    end

    assert_raise ArgumentError, ~r/argument event_type/, fn ->
      Synod.add_leader_watch(g, :k, self(), :become_candidate)
    end

    assert {:error, :no_member} = Synod.add_leader_watch(g, :k, self())
  end

  test "Synod.Raft.add_leader_watch/4 called directly checks its arguments too", %{group: g} do
    assert_raise ArgumentError, ~r/invalid argument group: expected an atom/, fn ->
      Synod.Raft.add_leader_watch("g", :k, self())
    end

    assert_raise ArgumentError, ~r/invalid argument target: expected a pid or a function/, fn ->
      Synod.Raft.add_leader_watch(g, :k, fn _ -> :ok end)
    end

    assert_raise ArgumentError, ~r/invalid argument event_type: expected one of/, fn ->
      Synod.Raft.add_leader_watch(g, :k, self(), :become_candidate)
    end

    assert {:error, :no_member} = Synod.Raft.add_leader_watch(g, :k, self(), :become_leader)
  end
end
