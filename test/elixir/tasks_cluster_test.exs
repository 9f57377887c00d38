defmodule Synod.TasksClusterTest do
  # Synod.Tasks on a 3-voter store on real peers: the whole transition table
  # through the store (a refused change writes nothing), leases expired on
  # the leader's clock and re-reserved, snoozes that end, listing 10k tasks
  # page by page, and worker helpers on every node, one of them paused.
  use ExUnit.Case, async: false

  alias Synod.Tasks
  alias Synod.Tasks.Rules
  alias Synod.Tasks.Task, as: Rec
  alias Synod.Test.Queue, as: Q
  alias Synod.Test.Wait

  @moduletag timeout: 120_000

  setup_all do
    ctx = Q.start_store("tc")
    on_exit(fn -> Q.stop(ctx) end)
    ctx
  end

  defp topic, do: "t#{System.unique_integer([:positive])}"

  defp idle_pid, do: spawn(fn -> Process.sleep(:infinity) end)

  # A fresh task whose status is `status`, held by `self()` when running.
  defp task_in(s, status) do
    topic = topic()
    {:ok, t} = Tasks.create_task(s, %{topic: topic, data: status})

    case status do
      :starting ->
        t

      _ ->
        {:ok, %Rec{status: :running} = t} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)

        case status do
          :running -> t
          :snoozed -> ok!(Tasks.snooze(s, t, self(), 60_000))
          :failed -> ok!(Tasks.fail(s, t, self(), :set_up))
          :terminated -> ok!(Tasks.terminate(s, t, self()))
        end
    end
  end

  defp ok!({:ok, t}), do: t

  # Asks for `to` as the task's rightful caller (its owner, or nil when
  # nobody holds it).
  defp attempt(s, t, :running) do
    case Tasks.reserve_task(s, t.topic, idle_pid()) do
      {:ok, nil} -> {:error, :nothing_reservable}
      {:ok, %Rec{id: id} = r} when id == t.id -> {:ok, r}
    end
  end

  defp attempt(s, t, :starting), do: Tasks.revoke_lease(s, t.id, t.record_ver)
  defp attempt(s, t, :snoozed), do: Tasks.snooze(s, t.id, t.owner, 60_000)
  defp attempt(s, t, :failed), do: Tasks.fail(s, t.id, t.owner, :boom)
  defp attempt(s, t, :terminated), do: Tasks.terminate(s, t.id, t.owner)

  test "every transition of the table through the store; a refused one writes nothing", %{
    store: s
  } do
    pairs = for from <- Rules.statuses(), to <- Rules.statuses(), do: {from, to}

    results =
      pairs
      |> Task.async_stream(
        fn {from, to} ->
          t = task_in(s, from)
          assert t.status == from
          {from, to, t, attempt(s, t, to), ok!(Tasks.task(s, t.id))}
        end,
        max_concurrency: 6,
        timeout: 60_000
      )
      |> Enum.map(fn {:ok, r} -> r end)

    for {from, to, before, result, now} <- results do
      if Rules.allowed?(from, to) do
        assert {:ok, %Rec{status: ^to}} = result, "#{from} -> #{to}: #{inspect(result)}"
        assert now.status == to and now.record_ver > before.record_ver
      else
        expected =
          cond do
            to == :running -> :nothing_reservable
            from in [:failed, :terminated] -> :already_done
            true -> {:invalid_transition, from, to}
          end

        assert {:error, ^expected} = result, "#{from} -> #{to}"
        assert now == before, "#{from} -> #{to} was refused but changed the task"
      end
    end

    assert Enum.count(results, fn {from, to, _, _, _} -> Rules.allowed?(from, to) end) == 10
  end

  test "an expired lease is re-reserved by another worker; the old owner's calls are refused",
       %{store: s} do
    topic = topic()
    {:ok, created} = Tasks.create_task(s, %{topic: topic, group_id: "g-exp", data: 1})
    {:ok, t} = Tasks.reserve_task(s, topic, self(), ttl: 400)
    assert t.id == created.id and t.owner == self() and t.lease_id > 0
    # Nobody else can reserve it while the lease lives.
    assert {:ok, nil} = Tasks.reserve_task(s, topic, idle_pid())
    assert {:ok, [%Rec{id: id}], nil} = Tasks.list_leased_tasks(s, topic)
    assert id == t.id

    # The leader expires the lease through the log: the task reads :starting.
    Wait.until(fn -> match?({:ok, %Rec{status: :starting}}, Tasks.task(s, t.id)) end)
    assert {:error, :lease_expired} = Tasks.extend_lease(s, t.id, self())
    assert {:error, :lease_expired} = Tasks.terminate(s, t.id, self())
    assert {:ok, [], nil} = Tasks.list_leased_tasks(s, topic)

    other = idle_pid()
    {:ok, t2} = Tasks.reserve_task(s, topic, other, ttl: 30_000)
    assert t2.id == t.id and t2.owner == other and t2.lease_id != t.lease_id

    for refused <- [
          Tasks.extend_lease(s, t, self()),
          Tasks.terminate(s, t, self()),
          Tasks.fail(s, t, self(), :late),
          Tasks.snooze(s, t, self(), 100)
        ],
        do: assert({:error, :wrong_owner} = refused)

    assert {:error, :record_changed} = Tasks.revoke_lease(s, t.id, t.record_ver)
    assert {:ok, ^t2} = Tasks.task(s, t.id)

    # The new owner renews; a snooze ends on the leader's clock too.
    assert {:ok, t3} = Tasks.extend_lease(s, t.id, other)
    assert t3.record_ver > t2.record_ver and t3.owner == other
    assert {:ok, %Rec{status: :snoozed, owner: nil}} = Tasks.snooze(s, t.id, other, 300)
    assert {:ok, nil} = Tasks.reserve_task(s, topic, self())

    assert {:ok, %Rec{status: :running} = t4} =
             Tasks.reserve_task(s, topic, self(), timeout: 10_000)

    # An operator's revoke with the current record version frees it at once.
    assert {:ok, %Rec{status: :starting}} = Tasks.revoke_lease(s, t4, t4.record_ver)
    assert {:ok, t5} = Tasks.reserve_task(s, topic, self())
    assert {:ok, %Rec{status: :terminated}} = Tasks.terminate(s, t5, self())
    assert {:error, :already_done} = Tasks.extend_lease(s, t5, self())

    assert {:ok, [%Rec{id: ^id, status: :terminated, group_id: "g-exp"}]} =
             Tasks.tasks(s, "g-exp")

    assert {:error, :no_task_found} = Tasks.terminate(s, "no such task", nil)
    assert {:error, :already_exists} = Tasks.create_task(s, %{id: t.id, topic: topic})
  end

  @doc false
  def count_request(_event, _measurements, %{kind: kind}, {pid, tag}),
    do: if(self() == pid, do: send(pid, {tag, kind}))

  # The store requests this process makes while `fun` runs, in order.
  defp requests(fun) do
    tag = make_ref()
    id = {__MODULE__, tag}
    handler = &__MODULE__.count_request/4
    :ok = Synod.Telemetry.attach(id, [:synod, :store, :request], handler, {self(), tag})
    fun.()
    Synod.Telemetry.detach(id)
    collect(tag, [])
  end

  defp collect(tag, acc) do
    receive do
      {^tag, kind} -> collect(tag, [kind | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "a change on a held struct is one txn; a struct that is not the stored record changes nothing",
       %{store: s} do
    topic = topic()
    {:ok, _} = Tasks.create_tasks(s, [%{topic: topic}, %{topic: topic}])
    owner = idle_pid()
    {:ok, t} = Tasks.reserve_task(s, topic, owner, ttl: 60_000)

    # Same record_ver and lease, another owner: planned on the struct it
    # would pass; the record's bytes differ, so the store's record decides.
    forged = %{t | owner: self()}
    assert {:error, :wrong_owner} = Tasks.terminate(s, forged, self())
    assert {:error, :wrong_owner} = Tasks.fail(s, %{forged | data: :other}, self(), :no)
    assert {:ok, ^t} = Tasks.task(s, t.id)

    # The owner's own struct: one txn, no read, no revoke.
    {:ok, mine} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)

    assert requests(fn -> {:ok, %Rec{status: :terminated}} = Tasks.terminate(s, mine, self()) end) ==
             [:txn]

    # A stale struct (the task changed since) is refused on the fresh view.
    assert {:error, :already_done} = Tasks.terminate(s, mine, self())
    assert {:ok, %Rec{status: :terminated}} = Tasks.task(s, mine.id)
  end

  test "the owner's terminated lease is its next reservation's, restarted at its full TTL",
       %{store: s} do
    topic = topic()
    {:ok, _} = Tasks.create_tasks(s, for(_ <- 1..3, do: %{topic: topic}))
    {:ok, a} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)
    {:ok, _} = Tasks.terminate(s, a, self())
    # The lease stays, holding no key, until the next reserve.
    {:ok, leases} = Synod.Store.leases(s)
    assert {a.lease_id, 60_000, []} in leases

    {:ok, b} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)
    assert b.id != a.id and b.lease_id == a.lease_id and b.status == :running
    {:ok, leases} = Synod.Store.leases(s)
    assert {b.lease_id, 60_000, [Tasks.lease_key(b)]} in leases

    # Another TTL: a new lease, and the spare is revoked.
    {:ok, _} = Tasks.terminate(s, b, self())
    {:ok, c} = Tasks.reserve_task(s, topic, self(), ttl: 30_000)
    assert c.lease_id != b.lease_id
    {:ok, leases} = Synod.Store.leases(s)
    refute List.keymember?(leases, b.lease_id, 0)
    assert {c.lease_id, 30_000, [Tasks.lease_key(c)]} in leases
  end

  test "a reservation after the owner's terminate is one txn; an older task freed meanwhile comes first",
       %{store: s, nodes: nodes} do
    # Counted on a peer (the store requests of that node's client): after
    # the first cycle each reservation reads ahead, so the next one is one
    # txn (and a keep-alive of the spare beside it), with no scan.
    [node | _] = nodes
    topic = topic()
    Q.on(node, :create_many, [s, topic, 20, "ahead-" <> topic])
    counts = Q.on(node, :count_requests, [:run_cycles, [s, topic, 20]])
    # 20 terminates, 20 reservations, and the first one's scan and read
    # (the txns of the scan path: 3 per cycle)
    assert counts.txn <= 42, inspect(counts)
    assert counts.keep_alive >= 19

    # t1 and t2 held, t3 kept ahead; t0 terminated (its lease the spare).
    topic = topic()
    {:ok, [t0, t1, t2, t3 | _]} = Tasks.create_tasks(s, for(_ <- 1..5, do: %{topic: topic}))
    {:ok, %Rec{id: id0} = r0} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)
    {:ok, %Rec{id: id1} = r1} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)
    assert {id0, id1} == {t0.id, t1.id}
    {:ok, _} = Tasks.terminate(s, r0, self())
    # Another process frees t1: it is the oldest reservable task again,
    # although this process kept t2's view as the next in line.
    {:ok, _} = Task.async(fn -> Tasks.revoke_lease(s, t1.id, r1.record_ver) end) |> Task.await()
    {:ok, again} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)
    assert again.id == t1.id
    {:ok, next} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)
    assert next.id == t2.id
    {:ok, _} = Tasks.terminate(s, again, self())
    {:ok, last} = Tasks.reserve_task(s, topic, self(), ttl: 60_000)
    assert last.id == t3.id
  end

  test "list_tasks pages through 10k tasks without gaps or repeats", %{store: s, nodes: nodes} do
    topics = for i <- 0..2, do: "list-#{i}-#{System.unique_integer([:positive])}"

    created =
      nodes
      |> Enum.zip(topics)
      |> Enum.with_index()
      |> Enum.map(fn {{node, topic}, i} ->
        n = if i == 0, do: 3_334, else: 3_333
        Task.async(fn -> Q.on(node, :create_many, [s, topic, n, "L#{i}"]) end)
      end)
      |> Task.await_many(90_000)

    all = created |> List.flatten() |> Enum.sort()
    assert length(all) == 10_000

    {ids, pages} = Q.list_all(s, %{}, 700)
    listed = Enum.filter(ids, &String.starts_with?(&1, "L"))
    assert length(listed) == 10_000 and listed == all
    assert pages >= 15

    # Filters: a topic, then a status after some tasks of it changed.
    {ids1, _} = Q.list_all(s, %{topic: Enum.at(topics, 1)}, 1_000)
    assert ids1 == Enum.sort(Enum.at(created, 1))

    for _ <- 1..5 do
      {:ok, t} = Tasks.reserve_task(s, Enum.at(topics, 2), self())
      {:ok, _} = Tasks.terminate(s, t, self())
    end

    {done, _} = Q.list_all(s, %{topic: Enum.at(topics, 2), status: :terminated}, 2)
    assert done == Enum.take(Enum.at(created, 2), 5)

    {none, 1} =
      Q.list_all(
        s,
        %{topic: Enum.at(topics, 0), from: System.system_time(:millisecond) + 60_000},
        100
      )

    assert none == []
    assert_raise ArgumentError, fn -> Tasks.list_tasks(s, %{colour: :red}, nil) end
    assert_raise ArgumentError, fn -> Tasks.list_tasks(s, %{}, %{limit: 0}) end
  end
end
