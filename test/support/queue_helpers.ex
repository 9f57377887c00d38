defmodule Synod.Test.Queue do
  @moduledoc false
  # Helpers for the queue and task-store tests and bench: a store on real
  # peers, and the producer/consumer/worker loops that run on those peers
  # (closures sent to peers must come from compiled modules).

  alias Synod.{Queue, Tasks}

  @doc "Starts `count` peers and a store on them; returns a map for the test (stop with `stop/1`)."
  def start_store(prefix, opts \\ []) do
    count = Keyword.get(opts, :count, 3)
    dir = Path.join(System.tmp_dir!(), "synod-#{prefix}-#{System.unique_integer([:positive])}")
    peers = Synod.LocalCluster.start(count, prefix: prefix)
    nodes = Enum.map(peers, &elem(&1, 1))
    store = :"#{prefix}#{System.unique_integer([:positive])}"
    :ok = Synod.Store.start(store, nodes, dir, Keyword.get(opts, :store_opts, []))
    leader = Synod.Test.Raft.wait_leader(store, nodes)
    %{peers: peers, nodes: nodes, store: store, leader: leader, dir: dir}
  end

  @doc "Stops what `start_store/2` started."
  def stop(%{peers: peers, dir: dir}) do
    Synod.LocalCluster.stop(peers)
    File.rm_rf(dir)
  end

  @doc "Runs `fun(args...)` of this module on `node`."
  def on(node, fun, args, timeout \\ 60_000), do: :erpc.call(node, __MODULE__, fun, args, timeout)

  # -- queue loops (run on peers) --

  @doc """
  Enqueues `"<tag>-<i>"` for i in 1..n; returns `{acknowledged, failed}`:
  `[{value, revision}]` of the enqueues that returned ok, and the values whose
  enqueue returned an error (their outcome is unknown).
  """
  def produce({store, name}, tag, n, pause_ms \\ 0) do
    results =
      for i <- 1..n do
        value = "#{tag}-#{i}"
        if pause_ms > 0, do: Process.sleep(pause_ms)

        case Queue.enqueue(store, name, value, call_timeout: 3_000) do
          {:ok, _key, rev} -> {:ok, value, rev}
          {:error, _} -> {:error, value}
        end
      end

    {for({:ok, v, r} <- results, do: {v, r}), for({:error, v} <- results, do: v)}
  end

  @doc """
  Dequeues until no value came for `idle_ms`; returns the items in the order
  received. With `vis`, acknowledged mode: each item is acked, and only the
  items whose ack succeeded are in `items`; `failed` has `{value, error}`
  for the others (dequeue errors too, with value nil).
  """
  def consume(queue, idle_ms, vis \\ nil), do: consume(queue, idle_ms, vis, [], [])

  defp consume(queue, idle_ms, vis, acc, failed) do
    {store, name} = queue

    opts =
      [timeout: idle_ms, call_timeout: 3_000] ++ if(vis, do: [visibility_timeout: vis], else: [])

    case Queue.dequeue(store, name, opts) do
      {:ok, item} when vis == nil ->
        consume(queue, idle_ms, vis, [item | acc], failed)

      {:ok, item} ->
        case Queue.ack(store, name, item.receipt, call_timeout: 3_000) do
          :ok -> consume(queue, idle_ms, vis, [item | acc], failed)
          {:error, e} -> consume(queue, idle_ms, vis, acc, [{item.value, e} | failed])
        end

      {:error, :empty} ->
        %{items: Enum.reverse(acc), failed: Enum.reverse(failed)}

      {:error, e} ->
        consume(queue, idle_ms, vis, acc, [{nil, e} | failed])
    end
  end

  # -- task loops (run on peers) --

  @doc "Creates `n` tasks of `topic` in batches of 32; returns their ids."
  def create_many(store, topic, n, prefix) do
    1..n
    |> Enum.chunk_every(32)
    |> Enum.flat_map(fn chunk ->
      attrs =
        for i <- chunk, do: %{id: "#{prefix}-#{String.pad_leading("#{i}", 6, "0")}", topic: topic}

      {:ok, tasks} = Tasks.create_tasks(store, attrs, timeout: 10_000)
      Enum.map(tasks, & &1.id)
    end)
  end

  @doc "Pages through every task matching `filters`; returns the ids in order and the page count."
  def list_all(store, filters, limit) do
    Stream.unfold(%{limit: limit}, fn
      nil ->
        nil

      cursor ->
        {:ok, tasks, next} = Tasks.list_tasks(store, filters, cursor, timeout: 10_000)
        {Enum.map(tasks, & &1.id), next}
    end)
    |> Enum.to_list()
    |> then(&{List.flatten(&1), length(&1)})
  end

  @doc """
  A worker function for tests: sends `{:ran, node, task_id, self()}` to
  `report`, then sleeps `data[:sleep][node()]` ms (default 0) and returns
  `data[:result]` (default `:ok`); `data[:snooze_once]` ms snoozes a task
  that was never snoozed.
  """
  def work(task, report) do
    data = if is_map(task.data), do: task.data, else: %{}
    send(report, {:ran, node(), task.id, self()})
    Process.sleep(get_in(data, [:sleep, node()]) || 0)

    cond do
      data[:snooze_once] && task.snooze_ms == nil -> {:snooze, data[:snooze_once]}
      true -> Map.get(data, :result, :ok)
    end
  end

  @doc """
  Suspends `pid` (on this node) from a process of its own, since a
  suspension ends with the process that made it; returns that process.
  `send(holder, :resume)` resumes.
  """
  def pause(pid) do
    parent = self()

    holder =
      spawn(fn ->
        true = :erlang.suspend_process(pid)
        send(parent, {:paused, self()})

        receive do
          :resume -> :erlang.resume_process(pid)
        end
      end)

    receive do
      {:paused, ^holder} -> holder
    end
  end

  @doc """
  Starts task workers on this node under a supervisor held by a process of
  its own (so it outlives the :erpc call); returns `{holder, [worker_pid]}`.
  Stop with `send(holder, :stop)`.
  """
  def start_workers(opts_list) do
    parent = self()

    holder =
      spawn(fn ->
        children =
          opts_list
          |> Enum.with_index()
          |> Enum.map(fn {o, i} -> {Tasks.Worker, [id: i] ++ o} end)

        {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
        pids = for {_, pid, _, _} <- Supervisor.which_children(sup), do: pid
        send(parent, {:workers, self(), pids})

        receive do
          :stop -> Supervisor.stop(sup)
        end
      end)

    receive do
      {:workers, ^holder, pids} -> {holder, pids}
    after
      10_000 -> raise "workers did not start"
    end
  end

  # -- for bench/queue_bench.exs (run on a peer) --

  @doc "Microseconds of each of `n` enqueue + dequeue pairs on `queue`."
  def pairs({store, name}, n) do
    for i <- 1..n do
      timed(fn ->
        {:ok, _, _} = Queue.enqueue(store, name, "v#{i}")
        {:ok, _} = Queue.dequeue(store, name, timeout: 5_000)
      end)
    end
  end

  @doc "Microseconds of each of `n` raw store puts (the baseline of the issue 18 targets)."
  def puts(store, n) do
    for i <- 1..n do
      key = "bench/put/#{i}"
      timed(fn -> {:ok, _, _} = Synod.Store.put(store, key, "v#{i}") end)
    end
  end

  @doc "Microseconds of each of `n` raw store put + delete pairs (the baseline)."
  def raw_pairs(store, n) do
    for i <- 1..n do
      key = "bench/raw/#{i}"

      timed(fn ->
        {:ok, _, _} = Synod.Store.put(store, key, "v#{i}")
        {:ok, _, 1, _} = Synod.Store.delete(store, key)
      end)
    end
  end

  @doc "Microseconds of each of `n` reserve + terminate cycles on `topic` (tasks created first)."
  def cycles(store, topic, n) do
    create_many(store, topic, n, "bench-#{topic}")
    run_cycles(store, topic, n)
  end

  @doc "Microseconds of each of `n` reserve + terminate cycles on `topic` (its tasks exist)."
  def run_cycles(store, topic, n) do
    for _ <- 1..n do
      timed(fn ->
        {:ok, %Tasks.Task{} = t} = Tasks.reserve_task(store, topic, self())
        {:ok, _} = Tasks.terminate(store, t, self())
      end)
    end
  end

  @doc "Runs `fun.(client_index)` in `clients` processes at once; returns wall microseconds."
  def concurrently(clients, fun) do
    timed(fn ->
      1..clients |> Enum.map(&Task.async(fn -> fun.(&1) end)) |> Task.await_many(600_000)
    end)
  end

  @doc "`pairs/2` from `clients` processes at once on one queue: pairs per second."
  def pair_rate(queue, clients, per_client),
    do: rate(clients * per_client, concurrently(clients, fn _ -> pairs(queue, per_client) end))

  @doc "`raw_pairs/2` from `clients` processes at once (distinct keys): pairs per second."
  def raw_rate(store, clients, per_client) do
    us =
      concurrently(clients, fn c ->
        for i <- 1..per_client do
          key = "bench/raw/#{c}/#{i}"
          {:ok, _, _} = Synod.Store.put(store, key, "v")
          {:ok, _, 1, _} = Synod.Store.delete(store, key)
        end
      end)

    rate(clients * per_client, us)
  end

  @doc "`cycles/3` from `clients` processes at once on one topic: cycles per second."
  def cycle_rate(store, topic, clients, per_client) do
    create_many(store, topic, clients * per_client, "bench-#{topic}")

    us =
      concurrently(clients, fn _ ->
        for _ <- 1..per_client do
          {:ok, %Tasks.Task{} = t} = Tasks.reserve_task(store, topic, self())
          {:ok, _} = Tasks.terminate(store, t, self())
        end
      end)

    rate(clients * per_client, us)
  end

  @kinds [:put, :delete, :txn, :range, :revision, :leases, :grant, :keep_alive, :revoke]

  @doc """
  Runs `fun(args...)` of this module on this node and counts the store
  requests it made, by kind (`[:synod, :store, :request]` telemetry of the
  calling process and the processes it started): `%{kind => count}`.
  """
  def count_requests(fun, args) do
    ref = :counters.new(length(@kinds), [:write_concurrency])
    id = {__MODULE__, :count, make_ref()}
    :ok = Synod.Telemetry.attach(id, [:synod, :store, :request], &__MODULE__.counted/4, ref)

    try do
      apply(__MODULE__, fun, args)
    after
      Synod.Telemetry.detach(id)
    end

    for {kind, i} <- Enum.with_index(@kinds, 1),
        (c = :counters.get(ref, i)) > 0,
        into: %{},
        do: {kind, c}
  end

  @doc false
  def counted(_event, _measurements, %{kind: kind}, ref) do
    case Enum.find_index(@kinds, &(&1 == kind)) do
      nil -> :ok
      i -> :counters.add(ref, i + 1, 1)
    end
  end

  defp rate(count, us), do: round(count / (us / 1_000_000))

  defp timed(fun) do
    t0 = System.monotonic_time(:microsecond)
    fun.()
    System.monotonic_time(:microsecond) - t0
  end
end
