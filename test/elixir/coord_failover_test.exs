defmodule Synod.CoordFailoverTest do
  # The coordination primitives while the store loses its leader's VM
  # (kill -9) or a node is cut off: nothing acknowledged is lost, no lock or
  # seat is granted twice, and a cut-off leader stops believing it leads
  # before anyone else is elected.
  use ExUnit.Case, async: false

  alias Synod.{Election, LocalCluster, Values}
  alias Synod.Test.{Coord, Raft}
  alias Synod.Test.Coord.Checker

  @moduletag timeout: 120_000

  setup do
    %{store: store, nodes: nodes, leader: leader} = Synod.Test.Cluster.store!(3, prefix: "cf")
    {:ok, store: store, nodes: nodes, leader: leader}
  end

  defp on(node, mod, fun, args), do: :erpc.call(node, mod, fun, args, 30_000)

  test "the store's leader killed during claims, renewals, locks and transforms",
       %{store: s, nodes: nodes, leader: leader} do
    [f1, f2] = nodes -- [leader]
    ttl = 1_500

    # The seat is held by a candidate on the leader's node, which dies with it.
    c0 = on(leader, Coord, :candidate, [s, :ef, "C0", ttl, self()])
    {:ok, :leader} = Election.start(c0)
    assert_receive {:claimed, "C0", token0, []}, 10_000
    c1 = on(f1, Coord, :candidate, [s, :ef, "C1", ttl, self()])
    c2 = on(f2, Coord, :candidate, [s, :ef, "C2", ttl, self()])
    :ok = Election.add_handlers(c1, [Coord.check_handler("C1", [c2], self())])
    :ok = Election.add_handlers(c2, [Coord.check_handler("C2", [c1], self())])
    {:ok, :follower} = Election.start(c1)
    {:ok, :follower} = Election.start(c2)

    {:ok, checker} = Checker.start()

    locks =
      Task.async(fn -> Coord.lock_contenders([f1, f2], 2, s, "fo/lock", 3_000, 12, checker, 5) end)

    Process.sleep(400)
    LocalCluster.kill(leader)
    Raft.wait_leader(s, [f1, f2])

    # Locks: every cycle granted once, never two holders, tokens growing.
    lock_results = Task.await(locks, 100_000)
    report = Checker.report(checker)
    assert report.violations == [], inspect(report.violations)
    granted = lock_results |> Enum.map(&elem(&1, 0)) |> Enum.sum()
    errors = Enum.flat_map(lock_results, &elem(&1, 1))
    assert granted == report.grants
    assert granted + length(errors) == 48
    assert Enum.all?(errors, &match?({:error, :timeout}, &1)), inspect(errors)
    assert granted >= 24

    # Election: C0's seat expires (its lease lives at least a TTL at the new
    # store leader), then exactly one of C1, C2 is elected with a larger
    # token, and the other did not believe it led when that happened.
    assert_receive {:claimed, winner, token, [false]}, 20_000
    assert token > token0
    loser = if winner == "C1", do: c2, else: c1
    winning = if winner == "C1", do: c1, else: c2
    Process.sleep(ttl)
    assert Election.leader?(winning) and not Election.leader?(loser)
    # One grant only: every claim message since names the same winner and token.
    assert claims() |> Enum.uniq() |> Enum.reject(&(&1 == {winner, token})) == []
    assert {:ok, ^winner} = on(f1, Election, :leader, [s, :ef])

    # The lock goes on after the failover, with a larger token.
    assert {:ok, last} = on(f2, Coord, :lock_token, [s, "fo/lock", 3_000])
    assert last > report.last
  end

  # Synod.Raft.command resends a command when the leader's node went down
  # mid-call; its request id makes the group apply it once (docs/raft.md),
  # so a compare-and-swap never fails against its own first copy.
  test "transforms while the store's leader is killed: acknowledged once, none lost",
       %{store: s, nodes: nodes, leader: leader} do
    [f1, f2] = nodes -- [leader]
    incs = Task.async(fn -> Coord.concurrent_increments([f1, f2], 4, s, "fo/counter", 25) end)
    Process.sleep(400)
    LocalCluster.kill(leader)

    # Every acknowledged increment is in the counter; one whose outcome was
    # unknown (timeout) counted at most once.
    inc_results = Task.await(incs, 100_000)
    acked = inc_results |> Enum.map(&elem(&1, 0)) |> Enum.sum()
    unknown = inc_results |> Enum.map(&elem(&1, 1)) |> Enum.sum()
    assert Enum.all?(inc_results, &(elem(&1, 2) == [])), inspect(inc_results)
    assert acked + unknown == 100
    {:ok, %{"fo/counter" => counter}} = on(f1, Values, :get_values, [s, "fo/counter"])
    assert counter >= acked and counter <= acked + unknown, inspect({counter, acked, unknown})
  end

  defp claims(acc \\ []) do
    receive do
      {:claimed, id, token, _} -> claims([{id, token} | acc])
    after
      0 -> acc
    end
  end

  @tag capture_log: true
  test "a leader cut off from the store stops leading before another is elected",
       %{store: s, nodes: nodes, leader: leader} do
    [f1, f2] = nodes -- [leader]
    ttl = 1_500
    # The candidate holding the seat runs on a store follower, f1, which is
    # then cut off from both other nodes.
    ca = on(f1, Coord, :candidate, [s, :ep, "A", ttl, self()])
    {:ok, :leader} = Election.start(ca)
    assert_receive {:claimed, "A", token_a, []}, 10_000
    cb = on(f2, Coord, :candidate, [s, :ep, "B", ttl, self()])
    {:ok, :follower} = Election.start(cb)
    Process.sleep(ttl)
    assert Election.leader?(ca)

    LocalCluster.partition([f1], [leader, f2])
    # Cut off, A's renewals cannot be confirmed: its deadline is fixed.
    until = on(f1, Coord, :leader_until_shared, [ca])
    assert is_integer(until)
    # B is granted only after A's own deadline passed (both on the
    # machine's shared counter).
    assert_receive {:claimed, "B", token_b, []}, 20_000
    assert_receive {:claimed_at, "B", ^token_b, granted_at}
    assert granted_at >= until
    assert token_b > token_a
    assert_receive {:synod_election, :ep, "A", {:deposed, ^token_a, _}}, 10_000

    LocalCluster.heal([f1], [leader, f2])
    # Healed, A finds B in the seat and waits; B still leads.
    Process.sleep(ttl)
    refute Election.leader?(ca)
    assert Election.leader?(cb)
    assert {:ok, "B"} = Election.leader(s, :ep)
    refute_received {:claimed, "A", _, _}
  end
end
