defmodule Synod.CoordElectionUnitTest do
  # Synod.Election.Candidate, the candidate's pure state machine, without a
  # store or peers: each event's effects, in order.
  use ExUnit.Case, async: true

  alias Synod.Election.Candidate, as: C

  @ttl 3_000
  @from {:caller, :ref}

  defp step(s, event, now \\ 1_000), do: C.step(s, event, now)

  # A candidate that won the seat at time 1_000: lease 7, token 10.
  defp leader do
    {s, _} = step(C.new(@ttl), {:start, nil})
    {s, _} = step(s, {:claim_done, {7, 1_000, {:won, %{token: 10, mod: 10}, 10}}})
    {s, []} = step(s, {:watch_started, 11})
    s
  end

  test "start claims; a won claim is announced, watched, and answered :leader" do
    {s, effects} = step(C.new(@ttl), {:start, @from})
    assert effects == [{:claim, nil}]

    {s, effects} = step(s, {:claim_done, {7, 990, {:won, %{token: 10, mod: 10}, 10}}})

    assert effects == [
             {:set_deadline, 3_990},
             {:arm, 3_990},
             {:watch, 11},
             {:run_handlers, 10},
             {:notify, {:elected, 10}},
             {:reply, @from, {:ok, :leader}}
           ]

    assert C.leading?(s)
    # Idempotent: a second start answers at once.
    assert {_, [{:reply, :other, {:ok, :leader}}]} = step(s, {:start, :other})
  end

  test "an occupied seat is watched and answered :follower; its delete starts a claim" do
    {s, _} = step(C.new(@ttl), {:start, @from})
    {s, effects} = step(s, {:claim_done, {7, 990, {:occupied, 20}}})
    assert effects == [{:watch, 21}, {:reply, @from, {:ok, :follower}}]
    {s, []} = step(s, {:watch_started, 21})
    {_s, effects} = step(s, {:seat_events, [{:delete, 25, %{}, nil}]})
    assert effects == [{:claim, 7}]
  end

  test "a failed first claim answers the error and retries later" do
    {s, _} = step(C.new(@ttl), {:start, @from})
    {s, effects} = step(s, {:claim_done, {nil, nil, {:error, :timeout}}})

    assert effects == [
             {:notify, {:error, :timeout}},
             {:retry_after, 1_000},
             {:reply, @from, {:error, :timeout}}
           ]

    assert {_, [{:claim, nil}]} = step(s, :retry)
  end

  test "starts during the first claim are answered with it" do
    {s, _} = step(C.new(@ttl), {:start, :a})
    {s, []} = step(s, {:start, :b})
    {_s, effects} = step(s, {:claim_done, {7, 990, {:occupied, 20}}})

    assert [{:watch, 21}, {:reply, :a, {:ok, :follower}}, {:reply, :b, {:ok, :follower}}] =
             effects
  end

  test "a claim won on a renewal already too old is not announced: claim again" do
    {s, _} = step(C.new(@ttl), {:start, @from})
    {s, effects} = step(s, {:claim_done, {7, 0, {:won, %{token: 10, mod: 10}, 10}}}, 5_000)
    assert effects == [{:claim, 7}]
    refute C.leading?(s)
    # The claim that adopts the seat answers start.
    {_s, effects} =
      step(s, {:claim_done, {7, nil, {:adopted, %{token: 10, mod: 10}, 7, 5_000, 11}}}, 5_000)

    assert {:reply, @from, {:ok, :leader}} = List.last(effects)
  end

  test "renewals move the deadline; a lease found gone deposes and claims again" do
    s = leader()
    # The lease keeper renews; the machine hears what it reports.
    {s, effects} = step(s, {:renewed, 7, 2_000})
    assert effects == [{:set_deadline, 5_000}, {:arm, 5_000}]
    # A renewal older than the last confirmed one does not move the deadline back.
    {s, [{:set_deadline, 5_000}, {:arm, 5_000}]} = step(s, {:renewed, 7, 1_500})
    # A store error is reported; leadership stands until the deadline.
    {s, [{:notify, {:error, :timeout}}]} = step(s, {:renew_error, 7, :timeout})
    assert C.leading?(s)
    # Reports about another lease change nothing.
    {s, []} = step(s, {:lease_lost, 99})
    {s, []} = step(s, {:renewed, 99, 2_500})

    {s, effects} = step(s, {:lease_lost, 7})

    assert effects == [
             {:set_deadline, nil},
             {:end_handlers, 10, :lease_expired},
             {:notify, {:deposed, 10, :lease_expired}},
             {:claim, nil}
           ]

    refute C.leading?(s)
  end

  test "the deadline passing without a confirmed renewal deposes" do
    s = leader()
    assert {_, []} = step(s, :deadline, 3_999)

    assert {_, [{:set_deadline, nil}, {:end_handlers, 10, :lease_expired}, _, {:claim, 7}]} =
             step(s, :deadline, 4_000)
  end

  test "stop ends leadership locally first, then releases; the caller is answered after" do
    s = leader()
    {s, effects} = step(s, {:stop, @from})

    assert effects == [
             {:set_deadline, nil},
             {:end_handlers, 10, :stopped},
             {:notify, {:deposed, 10, :stopped}},
             :unwatch,
             {:release, %{token: 10, mod: 10}, 7}
           ]

    assert {s, [{:reply, @from, :ok}]} = step(s, {:release_done, :ok})
    assert {_, [{:reply, :again, :ok}]} = step(s, {:stop, :again})
  end

  test "stopped during a claim that wins: released without being announced" do
    {s, _} = step(C.new(@ttl), {:start, @from})
    {s, []} = step(s, {:stop, :stopper})
    {_s, effects} = step(s, {:claim_done, {7, 990, {:won, %{token: 10, mod: 10}, 10}}})
    refute Enum.any?(effects, &match?({:notify, {:elected, _}}, &1))
    assert {:release, %{token: 10}, 7} = List.last(effects)
  end

  test "seat events: old history ignored, another holder's put or a delete deposes" do
    s = leader()
    assert {_, []} = step(s, {:seat_events, [{:put, 10, %{create_revision: 10}, nil}]})

    assert {_, [_, {:end_handlers, 10, :seat_lost}, _]} =
             step(s, {:seat_events, [{:put, 12, %{create_revision: 12}, nil}]})

    assert {_, [_, _, {:notify, {:deposed, 10, :seat_lost}}, {:claim, 7}]} =
             step(s, {:seat_events, [{:delete, 12, %{}, nil}]})
  end

  test "after a compaction a leader reads its seat and stays only if it is unchanged" do
    s = leader()
    {s, [:read_seat]} = step(s, {:seat_watch_ended, :compacted})

    assert {_, [{:watch, 16}]} =
             step(s, {:seat_read, {:ok, %{create_revision: 10, mod_revision: 15}}})

    assert {_, [_, _, {:notify, {:deposed, 10, :seat_lost}}, {:claim, 7}]} =
             step(s, {:seat_read, {:ok, nil}})
  end

  test "a seat watch whose server went away is set up again after the last revision seen" do
    s = leader()
    {s, []} = step(s, {:seat_events, [{:put, 13, %{create_revision: 10}, nil}]})
    assert {_, [{:watch, 14}]} = step(s, {:seat_watch_ended, :down})
  end

  test "a child spec is checked eagerly and names its child by election and id" do
    assert %{id: {Synod.Election, :e, "a"}} =
             Synod.Election.child_spec(store: :s, election: :e, id: "a", ttl: 1_000)

    assert_raise ArgumentError, ~r/option ttl/, fn ->
      Synod.Election.child_spec(store: :s, election: :e, id: "a", ttl: 1)
    end

    assert_raise ArgumentError, ~r/unknown option :nope/, fn ->
      Synod.Election.child_spec(store: :s, election: :e, id: "a", nope: 1)
    end
  end
end
