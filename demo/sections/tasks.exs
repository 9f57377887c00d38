# Demo section: a FIFO queue and a task workload on the replicated store.
# Loaded by demo/cluster.exs with Code.require_file and run as
# Synod.Demo.Tasks.run(nodes) on three fresh peer nodes.
#
# It starts a 3-voter Synod.Store, passes values through a queue from every
# node (each taken once, in revision order), then runs 30 tasks through
# Synod.Tasks.Worker helpers, two on every node: most terminate, two
# snooze once and come back, two fail. It ends with a worker paused mid-task:
# the leader expires its lease and a worker elsewhere takes the task over.

defmodule Synod.Demo.Tasks do
  @store :demo_tasks

  # The workers' function and their supervisor holder must exist on the
  # peers: a module compiled here, loaded there as a binary (a module of an
  # .exs file exists only in the VM that ran it).
  @remote (quote do
             defmodule Synod.Demo.TaskWork do
               @moduledoc false

               def work(task, report) do
                 send(report, {:ran, node(), task.id})
                 data = task.data

                 cond do
                   data[:sleep_on] == node() -> Process.sleep(60_000)
                   data[:snooze] && task.snooze_ms == nil -> {:snooze, data[:snooze]}
                   data[:fail] -> {:error, data[:fail]}
                   true -> :ok
                 end
               end

               def start_workers(opts, count) do
                 parent = self()

                 holder =
                   spawn(fn ->
                     children =
                       for i <- 1..count,
                           do: {Synod.Tasks.Worker, [id: i] ++ opts}

                     {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
                     send(parent, {:started, self(), Supervisor.which_children(sup)})
                     Process.sleep(:infinity)
                   end)

                 receive do
                   {:started, ^holder, children} -> for {_, pid, _, _} <- children, do: pid
                 end
               end

               def pause(pid) do
                 spawn(fn ->
                   :erlang.suspend_process(pid)
                   Process.sleep(:infinity)
                 end)
               end
             end
           end)

  def run(nodes) do
    section("Queues and leased tasks on the replicated store")
    dir = Path.join(System.tmp_dir!(), "synod-demo-tasks-#{System.unique_integer([:positive])}")

    try do
      # Until the store has a leader, calls wait in the Raft router.
      :ok = Synod.Store.start(@store, nodes, dir)
      [{mod, bin}] = Code.compile_quoted(@remote, "demo/sections/tasks.exs")

      for n <- nodes,
          do: {:module, ^mod} = :erpc.call(n, :code, :load_binary, [mod, ~c"demo", bin])

      queue(nodes)
      tasks(nodes, mod)
    after
      File.rm_rf(dir)
    end
  end

  defp queue(nodes) do
    q = "greetings"

    sent =
      for {n, i} <- Enum.with_index(Stream.cycle(nodes) |> Enum.take(6), 1) do
        {:ok, _key, rev} =
          :erpc.call(n, Synod.Queue, :enqueue, [@store, q, "hello #{i} from #{short(n)}"])

        rev
      end

    say("6 values enqueued from the 3 nodes, at revisions #{inspect(sent)}")

    got =
      for n <- Stream.cycle(Enum.reverse(nodes)) |> Enum.take(6) do
        {:ok, item} = :erpc.call(n, Synod.Queue, :dequeue, [@store, q, [timeout: 1_000]])
        {short(n), item.value, item.revision}
      end

    for {n, v, r} <- got, do: say("  #{n} dequeued #{inspect(v)} (revision #{r})")

    order =
      if Enum.map(got, &elem(&1, 2)) == Enum.sort(sent),
        do: "in revision order",
        else: "OUT OF ORDER"

    say("each value once, #{order}")
  end

  defp tasks(nodes, mod) do
    topic = "demo"
    opts = [store: @store, topic: topic, fun: {mod, :work, [self()]}, ttl: 2_000]
    for n <- nodes, do: :erpc.call(n, mod, :start_workers, [opts, 2])

    attrs =
      for(i <- 1..26, do: %{id: "task-#{i}", topic: topic, data: %{}}) ++
        for(i <- 1..2, do: %{id: "snoozer-#{i}", topic: topic, data: %{snooze: 300}}) ++
        for i <- 1..2, do: %{id: "failer-#{i}", topic: topic, data: %{fail: :no_such_user}}

    {:ok, _} = Synod.Tasks.create_tasks(@store, Enum.take(attrs, 15))
    {:ok, _} = Synod.Tasks.create_tasks(@store, Enum.drop(attrs, 15))
    say("\n30 tasks created; 2 workers (Synod.Tasks.Worker, lease 2 s) on every node")
    finals = wait_final(topic, 30)
    runs = drain([])

    for {n, count} <- runs |> Enum.frequencies_by(&elem(&1, 0)) |> Enum.sort(),
        do: say("  #{short(n)} ran #{count} tasks")

    by_status = Enum.frequencies_by(finals, & &1.status)

    say(
      "statuses: #{inspect(by_status)}; the 2 snoozers ran #{snoozer_runs(runs)} times (once more after their snooze)"
    )

    # A worker paused mid-task loses it: the leader expires its lease.
    [a, b | _] = nodes
    slow = [store: @store, topic: "slow", fun: {mod, :work, [self()]}, ttl: 1_000]
    [wa] = :erpc.call(a, mod, :start_workers, [slow, 1])
    {:ok, _} = Synod.Tasks.create_task(@store, %{id: "slow", topic: "slow", data: %{sleep_on: a}})

    receive do
      {:ran, ^a, "slow"} -> :ok
    after
      10_000 -> raise "demo: nobody ran the slow task"
    end

    :erpc.call(a, mod, :pause, [wa])

    say(
      "\n#{short(a)}'s worker runs task \"slow\" (60 s there) and is paused (:erlang.suspend_process)"
    )

    t0 = System.monotonic_time(:millisecond)
    :erpc.call(b, mod, :start_workers, [slow, 1])
    [done] = wait_final("slow", 1)

    say(
      "its 1 s lease expired on the leader's clock; a worker on #{short(b)} reserved the task and " <>
        "ended it (#{done.status}) #{System.monotonic_time(:millisecond) - t0} ms later"
    )
  end

  defp wait_final(topic, count, deadline \\ System.monotonic_time(:millisecond) + 30_000) do
    {:ok, tasks, nil} = Synod.Tasks.list_tasks(@store, %{topic: topic}, %{limit: 1000})

    if length(tasks) == count and Enum.all?(tasks, &(&1.status in [:terminated, :failed])) do
      tasks
    else
      if System.monotonic_time(:millisecond) > deadline, do: raise("demo: tasks did not finish")
      Process.sleep(50)
      wait_final(topic, count, deadline)
    end
  end

  defp drain(acc) do
    receive do
      {:ran, n, id} -> drain([{n, id} | acc])
    after
      0 -> acc
    end
  end

  defp snoozer_runs(runs),
    do: Enum.count(runs, fn {_, id} -> String.starts_with?(id, "snoozer") end)

  defp short(node), do: node |> Atom.to_string() |> String.split("@") |> hd()
  defp section(title), do: IO.puts("\n== #{title} ==")
  defp say(line), do: IO.puts(line)
end
