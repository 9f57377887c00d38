defmodule Synod.CoordEventsTest do
  # The coordination events (Synod.Telemetry) on a real one-voter store of
  # this node: lock acquired and released (ok and lock_lost), election
  # leader changes, queue depth, task transitions.
  use ExUnit.Case, async: false

  alias Synod.{Election, Lock, Queue, Store, Tasks}

  @events [
    [:synod, :lock, :acquired],
    [:synod, :lock, :released],
    [:synod, :election, :leader],
    [:synod, :queue, :depth],
    [:synod, :tasks, :transition]
  ]

  setup_all do
    {:ok, store: Synod.Test.Cluster.local_store!("ev")}
  end

  setup do
    id = {__MODULE__, make_ref()}

    :ok =
      Synod.Telemetry.attach_many(
        id,
        @events,
        fn event, m, md, pid -> send(pid, {:event, event, m, md}) end,
        self()
      )

    on_exit(fn -> Synod.Telemetry.detach(id) end)
    :ok
  end

  test "lock acquired (wait) and released (hold, result :ok | :lock_lost)", %{store: s} do
    {:ok, :done} = Lock.lock(s, "ev/l", fn -> Process.sleep(20) && :done end)

    assert_received {:event, [:synod, :lock, :acquired], %{wait: wait},
                     %{store: ^s, key: "ev/l", token: token}}

    assert is_integer(wait) and wait >= 0

    assert_received {:event, [:synod, :lock, :released], %{hold: hold},
                     %{store: ^s, key: "ev/l", token: ^token, result: :ok}}

    assert System.convert_time_unit(hold, :native, :millisecond) >= 20

    # The lease ends while fun runs: the lock is lost, and the event says so.
    lost = fn ->
      {:ok, [kv], _, _} = Store.range(s, Lock.contenders_prefix("ev/l2"), prefix: true)
      {:ok, _} = Store.revoke(s, kv.lease)
      :ran
    end

    assert {:error, {:lock_lost, :ran}} = Lock.lock(s, "ev/l2", lost, ttl: 3_000)
    assert_received {:event, [:synod, :lock, :acquired], _, %{key: "ev/l2", token: t2}}

    assert_received {:event, [:synod, :lock, :released], _,
                     %{key: "ev/l2", token: ^t2, result: :lock_lost}}

    # try_lock too.
    {:ok, t3, :x} = Lock.try_lock(s, "ev/l", fn -> :x end)
    assert_received {:event, [:synod, :lock, :acquired], _, %{key: "ev/l", token: ^t3}}
    assert t3 > token
  end

  test "election leader changes as the candidate sees them", %{store: s} do
    {:ok, c} = Election.candidate(s, :ev_e, "me", ttl: 2_000)
    {:ok, :leader} = Election.start(c)

    assert_receive {:event, [:synod, :election, :leader], %{},
                    %{store: ^s, election: :ev_e, leader: "me", previous: nil}},
                   5_000

    :ok = Election.stop(c)

    assert_receive {:event, [:synod, :election, :leader], %{},
                    %{store: ^s, election: :ev_e, leader: nil, previous: "me"}},
                   5_000

    :ok = Election.close(c)
  end

  test "queue depth from count/3 and from a dequeue that found the queue empty", %{store: s} do
    for v <- 1..3, do: {:ok, _, _} = Queue.enqueue(s, "evq", v)
    {:ok, 3} = Queue.count(s, "evq")
    assert_received {:event, [:synod, :queue, :depth], %{depth: 3}, %{store: ^s, queue: "evq"}}
    for _ <- 1..3, do: {:ok, _} = Queue.dequeue(s, "evq", timeout: 0)
    refute_received {:event, [:synod, :queue, :depth], _, _}
    {:error, :empty} = Queue.dequeue(s, "evq", timeout: 0)
    assert_received {:event, [:synod, :queue, :depth], %{depth: 0}, %{queue: "evq"}}
  end

  test "task transitions: created, reserved, snoozed, revoked, terminated", %{store: s} do
    {:ok, t} = Tasks.create_task(s, %{topic: "evt"})
    id = t.id
    tr = [:synod, :tasks, :transition]
    assert_received {:event, ^tr, %{}, %{store: ^s, task: ^id, from: nil, to: :starting}}
    {:ok, t} = Tasks.reserve_task(s, "evt", self())
    assert_received {:event, ^tr, %{}, %{task: ^id, from: :starting, to: :running}}
    # An extend is no transition.
    {:ok, t} = Tasks.extend_lease(s, t, self())
    refute_received {:event, ^tr, _, _}
    {:ok, t} = Tasks.snooze(s, t, self(), 60_000)
    assert_received {:event, ^tr, %{}, %{task: ^id, from: :running, to: :snoozed}}
    {:ok, _} = Tasks.revoke_lease(s, t, t.record_ver)
    assert_received {:event, ^tr, %{}, %{task: ^id, from: :snoozed, to: :starting}}
    {:ok, t} = Tasks.reserve_task(s, "evt", self())
    assert_received {:event, ^tr, %{}, %{task: ^id, from: :starting, to: :running}}
    {:ok, _} = Tasks.terminate(s, t, self())
    assert_received {:event, ^tr, %{}, %{task: ^id, from: :running, to: :terminated}}
    # The table the events follow.
    assert :terminated in Tasks.transitions().running
  end
end
