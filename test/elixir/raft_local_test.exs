defmodule Synod.RaftLocalTest do
  # The driver on this node alone: a one-voter group (its own quorum), the
  # leader-watch delivery rules, recovery from damaged files, and options.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  require Logger
  alias Synod.Raft
  alias Synod.Test.Wait

  setup_all do
    Synod.LocalCluster.ensure_distributed()
    :ok
  end

  setup do
    dir = Path.join(System.tmp_dir!(), "synod-raft-local-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    {:ok, dir: dir, group: :"l#{System.unique_integer([:positive])}"}
  end

  defp start(group, dir, opts \\ []) do
    Raft.start_member(
      [name: group, voters: [node()], data_dir: dir, machine: Synod.Raft.KV] ++ opts
    )
  end

  test "a one-voter group leads itself; watches and Synod.leader/1 agree", %{group: g, dir: dir} do
    me = self()
    assert Synod.leader(g) == nil and Synod.term(g) == 0
    {:ok, _} = start(g, dir)
    :ok = Synod.add_leader_watch(g, :fun, fn k, e, b, a -> send(me, {:fun, k, e, b, a}) end)
    Wait.until(fn -> Synod.leader?(g) end)
    assert Synod.leader(g) == node() and Synod.term(g) >= 1
    assert {:ok, nil} = Raft.command(g, {:put, :a, 1})
    assert {:ok, 1} = Raft.query(g, &Map.get(&1, :a))
    assert {:ok, 1} = Raft.query(g, &Map.get(&1, :a), consistency: :stale)
    assert {:ok, {:error, {:unknown_command, :nope}}} = Raft.command(g, :nope)
    :ok = Raft.stop_member(g)
    assert Synod.leader(g) == nil and not Synod.leader?(g)
  end

  test "a command retried under its request id is applied once, also after a snapshot and a restart",
       %{group: g, dir: dir} do
    {:ok, _} = start(g, dir, snapshot_every: 5)
    Wait.until(fn -> Synod.leader?(g) end)
    member = Raft.member_name(g)
    id = make_ref()
    assert {:ok, 1} = GenServer.call(member, {:command, {:incr, :n, 1}, id})
    assert {:ok, 1} = GenServer.call(member, {:command, {:incr, :n, 1}, id})
    # Past a snapshot (every 5 entries), and after a restart from disk.
    for _ <- 1..10, do: {:ok, _} = Raft.command(g, {:incr, :other, 1})
    assert {:ok, 1} = GenServer.call(member, {:command, {:incr, :n, 1}, id})
    :ok = Raft.stop_member(g)
    {:ok, _} = start(g, dir, snapshot_every: 5)
    Wait.until(fn -> Synod.leader?(g) end)
    assert {:ok, 1} = GenServer.call(member, {:command, {:incr, :n, 1}, id})
    assert {:ok, 2} = Raft.command(g, {:incr, :n, 1})
    assert Path.wildcard(Path.join(dir, "snapshot.*")) != []
  end

  @tag :capture_log
  test "watches: filters, replacement, isolation of slow and crashing functions", %{group: g} do
    {:ok, w} = Raft.Watches.start_link(name: g)
    me = self()

    lead =
      {:become_leader, :election_won, %{role: :candidate, leader: nil, term: 2},
       %{role: :leader, leader: node(), term: 2}}

    follow =
      {:become_follower, :higher_term, %{role: :leader, leader: node(), term: 2},
       %{role: :follower, leader: :other@host, term: 3}}

    cand =
      {:become_candidate, :campaign, %{role: :follower, leader: nil, term: 1},
       %{role: :candidate, leader: nil, term: 2}}

    :ok = Raft.add_leader_watch(g, :all, me)
    :ok = Raft.add_leader_watch(g, :leads, me, :become_leader)
    :ok = Raft.add_leader_watch(g, :slow, fn _, _, _, _ -> Process.sleep(:infinity) end)

    :ok =
      Raft.add_leader_watch(g, :crashy, fn k, e, b, a ->
        if e == :become_leader, do: raise("boom")
        send(me, {:crashy, k, e, b, a})
      end)

    log =
      capture_log(fn ->
        send(w, {:raft_events, [cand, lead, follow]})
        # The pid watches get both changes, in order, and never the candidate step.
        assert_receive {:synod_leader_watch, ^g, :all, :become_leader, %{role: :candidate},
                        %{role: :leader}}

        assert_receive {:synod_leader_watch, ^g, :leads, :become_leader, _, _}
        assert_receive {:synod_leader_watch, ^g, :all, :become_follower, %{term: 2}, %{term: 3}}
        # The crashing function was logged and still sees the next change.
        assert_receive {:crashy, :crashy, :become_follower, %{role: :leader}, %{role: :follower}}
        Logger.flush()
      end)

    assert log =~ "boom"
    refute_received {:synod_leader_watch, ^g, :leads, :become_follower, _, _}
    refute_received {:synod_leader_watch, _, _, :become_candidate, _, _}

    # A key in use is replaced; a removed watch gets nothing.
    :ok =
      Raft.add_leader_watch(g, :all, fn _, _, _, _ -> send(me, :replaced) end, :become_follower)

    :ok = Raft.remove_leader_watch(g, :leads)
    send(w, {:raft_events, [lead, follow]})
    assert_receive :replaced
    refute_receive {:synod_leader_watch, _, _, _, _, _}, 100
    GenServer.stop(w)
  end

  test "a torn tail is recovered; a corrupt record stops the member with the reason", ctx do
    %{group: g, dir: dir} = ctx
    {:ok, _} = start(g, dir)
    for i <- 1..20, do: {:ok, _} = Raft.command(g, {:put, i, i})
    :ok = Raft.stop_member(g)
    [log] = Path.wildcard(Path.join(dir, "log.*"))

    # A write cut short at the end: recovered without it.
    File.write!(log, File.read!(log) |> binary_part(0, File.stat!(log).size - 5))
    {:ok, _} = start(g, dir)
    Wait.until(fn -> Synod.leader?(g) end)
    assert {:ok, state} = Raft.query(g, &Function.identity/1)
    assert map_size(state) >= 19 and Enum.all?(state, fn {k, v} -> k == v end)
    :ok = Raft.stop_member(g)

    # A flipped byte in the middle: refused, with file and offset.
    bin = File.read!(log)
    at = div(byte_size(bin), 2)
    <<head::binary-size(at), byte, rest::binary>> = bin
    File.write!(log, [head, Bitwise.bxor(byte, 0xFF), rest])

    capture_log(fn ->
      assert {:error, reason} = start(g, dir)
      assert inspect(reason) =~ ~r/:corrupt, "#{Regex.escape(log)}", \d+/
    end)
  end

  test "options are checked eagerly", %{dir: dir} do
    base = [name: :x, voters: [node()], data_dir: "d", machine: Synod.Raft.KV]

    for {opts, message} <- [
          {Keyword.delete(base, :name), "name"},
          {Keyword.put(base, :machine, String), "does not implement"},
          {Keyword.put(base, :machine, 42), "machine"},
          {Keyword.delete(base, :voters), "voters"},
          {Keyword.put(base, :voters, [:a, :a]), "voters"},
          {Keyword.put(base, :tick_ms, 0), "tick_ms"},
          {Keyword.put(base, :heartbeat_tick, 10), "heartbeat_tick"},
          {Keyword.put(base, :max_inflight, 0), "max_inflight"},
          {Keyword.put(base, :bogus, 1), "unknown options"},
          {Keyword.put(base, :data_dir, ""), "data_dir"}
        ] do
      assert_raise ArgumentError, ~r/#{message}/, fn -> Raft.child_spec(opts) end
    end

    assert_raise ArgumentError, ~r/consistency/, fn ->
      Raft.query(:x, & &1, consistency: :eventual)
    end

    not_me = Keyword.merge(base, voters: [:other@host], data_dir: dir)
    assert {:error, reason} = Raft.start_member(not_me)
    assert inspect(reason) =~ "not_a_voter"
  end
end
