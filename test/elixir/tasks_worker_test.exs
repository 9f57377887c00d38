defmodule Synod.TasksWorkerTest do
  # Synod.Tasks.Worker on real peers: workers on every node share a topic's
  # workload, and a worker that is paused loses its task to another, whose
  # result is the one that counts, and stops running it once it resumes.
  use ExUnit.Case, async: false

  alias Synod.Tasks
  alias Synod.Tasks.Worker
  alias Synod.Test.Queue, as: Q
  alias Synod.Test.Wait

  @moduletag timeout: 120_000
  # A worker logs each task it loses.
  @moduletag :capture_log

  setup_all do
    ctx = Q.start_store("tw")
    on_exit(fn -> Q.stop(ctx) end)
    ctx
  end

  defp worker_opts(s, topic, ttl),
    do: [store: s, topic: topic, fun: {Q, :work, [self()]}, ttl: ttl]

  defp ran(acc \\ []) do
    receive do
      {:ran, node, id, _pid} -> ran([{node, id} | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "workers on every node run a topic's tasks to their end", %{store: s, nodes: nodes} do
    topic = "work"
    opts = worker_opts(s, topic, 5_000)
    holders = for n <- nodes, do: elem(Q.on(n, :start_workers, [[opts, opts]]), 0)

    plain = for i <- 1..20, do: %{id: "w#{i}", topic: topic}
    snoozing = for i <- 1..2, do: %{id: "s#{i}", topic: topic, data: %{snooze_once: 200}}
    failing = for i <- 1..2, do: %{id: "f#{i}", topic: topic, data: %{result: {:error, :bad}}}
    {:ok, _} = Tasks.create_tasks(s, plain ++ snoozing ++ failing)

    Wait.until(
      fn ->
        {:ok, tasks, nil} = Tasks.list_tasks(s, %{topic: topic}, %{limit: 100})
        Enum.all?(tasks, &(&1.status in [:terminated, :failed]))
      end,
      30_000
    )

    {:ok, tasks, nil} = Tasks.list_tasks(s, %{topic: topic}, %{limit: 100})
    by_status = Enum.group_by(tasks, & &1.status, & &1.id)
    assert Enum.sort(by_status.failed) == ["f1", "f2"]
    assert length(by_status.terminated) == 22
    assert Enum.all?(tasks, &(&1.owner == nil))
    assert {:ok, [], nil} = Tasks.list_leased_tasks(s, topic)

    runs = ran()
    counts = Enum.frequencies_by(runs, &elem(&1, 1))
    # Each plain task ran once; a snoozed one ran again when its snooze ended.
    for %{id: id} <- plain ++ failing,
        do: assert(counts[id] == 1, "#{id} ran #{counts[id]} times")

    for %{id: id} <- snoozing, do: assert(counts[id] == 2)
    assert runs |> Enum.map(&elem(&1, 0)) |> Enum.uniq() |> length() >= 2

    for {h, n} <- Enum.zip(holders, nodes), do: :erpc.call(n, Kernel, :send, [h, :stop])
  end

  test "a paused worker loses its task, and stops running it when it resumes",
       %{store: s, nodes: [a, b | _]} do
    topic = "pause"
    {_ha, [wa]} = Q.on(a, :start_workers, [[worker_opts(s, topic, 600)]])
    # On node a the task would run for 30 s; on b it is quick.
    {:ok, task} = Tasks.create_task(s, %{topic: topic, data: %{sleep: %{a => 30_000}}})
    assert_receive {:ran, ^a, id, runner_a}, 10_000
    assert id == task.id
    assert %{id: ^id} = :erpc.call(a, Worker, :current, [wa])

    pause = Q.on(a, :pause, [wa])
    {_hb, [_wb]} = Q.on(b, :start_workers, [[worker_opts(s, topic, 5_000)]])
    # a cannot renew: the leader expires its lease and b takes the task over.
    assert_receive {:ran, ^b, ^id, _}, 15_000
    Wait.until(fn -> match?({:ok, %{status: :terminated}}, Tasks.task(s, id)) end)
    assert :erpc.call(a, Process, :alive?, [runner_a])

    :erpc.call(a, Kernel, :send, [pause, :resume])
    Wait.until(fn -> not :erpc.call(a, Process, :alive?, [runner_a]) end)
    assert :erpc.call(a, Worker, :current, [wa]) == nil
    assert {:ok, %{status: :terminated, error: nil}} = Tasks.task(s, id)
    assert Enum.count(ran(), &(&1 == {a, id})) == 0
  end

  test "a task record that does not decode is set aside with a named error, not a crash loop",
       %{store: s, nodes: [a | _]} do
    topic = "garbage"
    seg = <<byte_size(topic)::16, topic::binary>>
    # Two records no worker wrote, at the head of the topic (seq 0 sorts
    # before every real task): bytes that are no term, and a term that is
    # no task.
    for {id, bytes} <- [{"bad1", "not a term"}, {"bad2", :erlang.term_to_binary(:x)}] do
      {:ok, _, _} = Synod.Store.put(s, "synod/t/r/" <> id, bytes)
      {:ok, _, _} = Synod.Store.put(s, "synod/t/x/" <> seg <> "a" <> <<0::64>> <> id, id)
    end

    assert {:error, {:undecodable_task, "bad1"}} = Tasks.task(s, "bad1")
    assert {:error, {:undecodable_task, "bad2"}} = Tasks.task(s, "bad2")

    {:ok, task} = Tasks.create_task(s, %{topic: topic})
    {_h, [w]} = Q.on(a, :start_workers, [[worker_opts(s, topic, 5_000)]])
    # The worker goes past both records and runs the real task, without restarting.
    assert_receive {:ran, ^a, id, _}, 15_000
    assert id == task.id
    Wait.until(fn -> match?({:ok, %{status: :terminated}}, Tasks.task(s, id)) end)
    assert :erpc.call(a, Process, :alive?, [w])
    # Nothing is lost: the records stay, still named as undecodable.
    assert {:ok, %{value: "not a term"}} = Synod.Store.get(s, "synod/t/r/bad1")
    assert {:error, {:undecodable_task, "bad1"}} = Tasks.task(s, "bad1")
    # A reserve on the topic now finds nothing, and listings leave them out.
    assert {:ok, nil} = Tasks.reserve_task(s, topic, self())
    assert {:ok, [%{id: ^id}], nil} = Tasks.list_tasks(s, %{topic: topic})
  end
end
