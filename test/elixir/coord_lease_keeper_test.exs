defmodule Synod.CoordLeaseKeeperTest do
  # Synod.Coord.LeaseKeeper on a real one-voter store of this node (real
  # files, fsync): grant on first use, renew at ttl/3, revoke when the owner
  # dies (or let the lease expire, in :expire mode), the owner's pace, and
  # the loss of a lease reported exactly once.
  use ExUnit.Case, async: false

  alias Synod.Coord.LeaseKeeper
  alias Synod.Store
  alias Synod.Test.Wait

  @ttl 600

  setup_all do
    {:ok, store: Synod.Test.Cluster.local_store!("lk")}
  end

  defp key, do: "lk/#{System.unique_integer([:positive])}"

  # A key on `lease`: it exists exactly while the lease lives.
  defp put_on(store, lease) do
    k = key()
    {:ok, _, _} = Store.put(store, k, "v", lease: lease)
    k
  end

  defp present?(store, k), do: match?({:ok, %{}}, Store.get(store, k))

  # Runs `fun` in a process that then waits until told to exit.
  defp owner(fun) do
    me = self()

    pid =
      spawn(fn ->
        send(me, {:owner, self(), fun.()})

        receive do
          :exit -> :ok
        end
      end)

    receive do
      {:owner, ^pid, result} -> {pid, result}
    end
  end

  test "shared (checkout): granted on first use, renewed past its TTL, revoked at once when the owner dies",
       %{store: s} do
    {pid, {keeper, lease, again, k}} =
      owner(fn ->
        {:ok, keeper, lease} = LeaseKeeper.checkout(s, @ttl, 5_000)
        {:ok, ^keeper, again} = LeaseKeeper.checkout(s, @ttl, 5_000)
        {keeper, lease, again, put_on(s, lease)}
      end)

    assert again == lease
    # Renewed every ttl/3: alive after three TTLs.
    Process.sleep(3 * @ttl)
    assert present?(s, k)
    ref = Process.monitor(keeper)
    t0 = System.monotonic_time(:millisecond)
    send(pid, :exit)
    assert_receive {:DOWN, ^ref, :process, _, :normal}, 5_000
    Wait.until(fn -> not present?(s, k) end)
    # Revoked, not expired: well before the TTL ran out.
    assert System.monotonic_time(:millisecond) - t0 < @ttl
    # Nothing from outside crashes it (a fresh keeper).
    {:ok, k2} = LeaseKeeper.start(s, @ttl)
    assert {:error, {:bad_request, :bogus}} = GenServer.call(k2, :bogus)
    GenServer.cast(k2, :bogus)
    send(k2, :bogus)
    assert Process.alive?(k2)
    LeaseKeeper.stop(k2)
  end

  test "dedicated, on_owner_exit: :expire: the lease outlives its owner and ends at its TTL",
       %{store: s} do
    {pid, {keeper, k}} =
      owner(fn ->
        {:ok, keeper} = LeaseKeeper.start(s, @ttl, on_owner_exit: :expire)
        {:ok, lease, sent} = LeaseKeeper.lease(keeper, 5_000)
        assert is_integer(sent)
        # Granted once: the same lease, no new grant (sent nil).
        {:ok, ^lease, nil} = LeaseKeeper.lease(keeper, 5_000)
        {keeper, put_on(s, lease)}
      end)

    ref = Process.monitor(keeper)
    send(pid, :exit)
    assert_receive {:DOWN, ^ref, :process, _, :normal}, 5_000
    # Not revoked: still there a third of the TTL later, gone after it.
    Process.sleep(div(@ttl, 3))
    assert present?(s, k)
    Wait.until(fn -> not present?(s, k) end, 10_000)
  end

  test "dedicated, on_owner_exit: :revoke with an existing lease: revoked when the owner is killed",
       %{store: s} do
    {:ok, lease, _} = Store.grant(s, 30_000)
    k = put_on(s, lease)
    {pid, keeper} = owner(fn -> elem(LeaseKeeper.start(s, 30_000, lease: lease), 1) end)
    assert {:ok, ^lease, nil} = LeaseKeeper.lease(keeper, 5_000)
    Process.exit(pid, :kill)
    Wait.until(fn -> not present?(s, k) end, 5_000)
  end

  test "the loss of a lease is reported to the owner exactly once; the next use grants a new one",
       %{store: s} do
    {:ok, keeper} = LeaseKeeper.start(s, @ttl, notify: true)
    {:ok, lease, _} = LeaseKeeper.lease(keeper, 5_000)
    assert_receive {:synod_lease, ^keeper, {:renewed, ^lease, sent}}, 2_000
    assert is_integer(sent)
    # Someone else ends it (as the store's leader does when it expires).
    {:ok, _} = Store.revoke(s, lease)
    assert_receive {:synod_lease, ^keeper, {:lost, ^lease}}, 2_000
    # Several renewal periods later: no second report, no renewals of it.
    Process.sleep(3 * @ttl)
    refute_received {:synod_lease, ^keeper, {:lost, _}}
    refute_received {:synod_lease, ^keeper, {:renewed, ^lease, _}}
    {:ok, lease2, _} = LeaseKeeper.lease(keeper, 5_000)
    assert lease2 != lease
    assert_receive {:synod_lease, ^keeper, {:renewed, ^lease2, _}}, 2_000
    # A lease the caller found gone itself is forgotten without a report.
    LeaseKeeper.forget(keeper, lease2)
    {:ok, _} = Store.revoke(s, lease2)
    Process.sleep(2 * @ttl)
    refute_received {:synod_lease, ^keeper, {:lost, _}}
    LeaseKeeper.stop(keeper)
  end

  test "pace: :owner renews only when the owner answers; adopt takes over a live lease",
       %{store: s} do
    # An owner that never answers its keeper's ticks loses the lease at the TTL.
    {_silent, {keeper, k}} =
      owner(fn ->
        {:ok, keeper} = LeaseKeeper.start(s, @ttl, pace: :owner, notify: true)
        {:ok, lease, _} = LeaseKeeper.lease(keeper, 5_000)
        {keeper, put_on(s, lease)}
      end)

    Wait.until(fn -> not present?(s, k) end, 10_000)
    LeaseKeeper.stop(keeper)

    # This process answers: the lease lives past several TTLs.
    {:ok, keeper} = LeaseKeeper.start(s, @ttl, pace: :owner, notify: true)
    {:ok, lease, _} = LeaseKeeper.lease(keeper, 5_000)
    k = put_on(s, lease)
    deadline = System.monotonic_time(:millisecond) + 3 * @ttl

    answer = fn answer ->
      receive do
        {:synod_lease, ^keeper, :tick} ->
          LeaseKeeper.renew(keeper)
          answer.(answer)

        {:synod_lease, ^keeper, _} ->
          answer.(answer)
      after
        max(deadline - System.monotonic_time(:millisecond), 0) -> :ok
      end
    end

    answer.(answer)
    assert present?(s, k)

    # Adopting another live lease: the keeper keeps it and revokes its own.
    {:ok, other, _} = Store.grant(s, 30_000)
    k_other = put_on(s, other)
    assert {:ok, sent} = LeaseKeeper.adopt(keeper, other, 5_000)
    assert is_integer(sent)
    assert {:ok, ^other, nil} = LeaseKeeper.lease(keeper, 5_000)
    Wait.until(fn -> not present?(s, k) end, 5_000)
    assert present?(s, k_other)
    # A gone lease cannot be adopted.
    {:ok, _} = Store.revoke(s, other)
    assert {:error, :lease_not_found} = LeaseKeeper.adopt(keeper, other, 5_000)
    assert :ok = LeaseKeeper.revoke(keeper, other, 5_000)
    LeaseKeeper.stop(keeper)
  end

  test "bad arguments and options raise, naming them", %{store: s} do
    assert_raise ArgumentError, ~r/option on_owner_exit/, fn ->
      LeaseKeeper.start(s, @ttl, on_owner_exit: :never)
    end

    assert_raise ArgumentError, ~r/option pace/, fn -> LeaseKeeper.start(s, @ttl, pace: 3) end
    assert_raise ArgumentError, ~r/argument ttl/, fn -> LeaseKeeper.start(s, 0) end
  end
end
