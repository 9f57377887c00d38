defmodule Synod.Tasks.Worker do
  @moduledoc """
  A supervised worker for `Synod.Tasks`: it reserves the tasks of one
  topic, one at a time, runs a function on each, keeps the task's lease
  alive while it runs, and ends the task from the function's result.

      children = [
        {Synod.Tasks.Worker, store: :jobs, topic: "mail", fun: &MyApp.Mail.send/1, ttl: 10_000},
        {Synod.Tasks.Worker, id: :mail_2, store: :jobs, topic: "mail", fun: &MyApp.Mail.send/1}
      ]

  Options: `store:` and `topic:` (required); `fun:` (required) a 1-arity
  function or `{module, function, args}` called as
  `apply(module, function, [task | args])`; `ttl:` the lease TTL in ms
  (default 30,000); `call_timeout:` each store round trip (default 5,000);
  `name:`; `id:` the child id in a supervisor (default
  `Synod.Tasks.Worker`: give each worker of one supervisor its own).

  The function's result decides:

    * `:ok` or `{:ok, _}` — `Synod.Tasks.terminate/4`;
    * `{:snooze, ms}` — `Synod.Tasks.snooze/5`;
    * `{:error, reason}` — `Synod.Tasks.fail/5` with `reason`;
    * anything else, or a crash — `fail` with `{:bad_result, term}` or
      `{:crashed, reason}`.

  The function runs in a process of its own, linked to the worker. The
  task's lease is kept by a `Synod.Coord.LeaseKeeper` of the job (renewed
  every `ttl / 3`, paced by the worker: a worker that is suspended or stuck
  renews nothing; revoked at once if the worker dies, so the task is free
  again). The worker also watches the task's lease key: the moment the
  store deletes it (the lease expired, e.g. because this worker was paused
  or cut off, or an operator revoked it), or the keeper reports the lease
  lost, the function's process is killed and the worker goes back to
  reserving. A task whose lease is lost is
  never ended by this worker: the store refuses it (`:wrong_owner` /
  `:lease_expired`), so at most one worker's result counts.

  Idle workers wait on a store watch of the topic (new tasks, expired
  leases, ended snoozes), not by polling. A worker that is stopped
  revokes the lease of the task it was running, so another worker takes it
  at once.
  """

  use GenServer
  require Logger

  alias Synod.Coord.{Deadline, LeaseKeeper, Options, Stores, Watch}
  alias Synod.Store
  alias Synod.Tasks

  @schema [
    store: [type: :atom, required: true],
    topic: [type: {:binary, 255}, required: true],
    fun: [
      type:
        {:or,
         [
           {:fun, 1},
           {:custom, &__MODULE__.mfa?/1, "{module, function, args}"}
         ]},
      required: true
    ],
    ttl: [type: {:ms, 1}, default: 30_000],
    call_timeout: [type: :pos_integer, default: 5_000],
    name: [type: :any],
    id: [type: :any]
  ]

  @doc """
  Starts a worker linked to the caller; see the module doc for the options.
  `{:error, {:unknown_store, store}}` when the store does not run.
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    opts = Options.validate!(opts, @schema)
    start_opts = if Map.has_key?(opts, :name), do: [name: opts.name], else: []

    with :ok <- Stores.check(opts.store),
         do: GenServer.start_link(__MODULE__, opts, start_opts)
  end

  @doc "A child spec; `id:` (default `Synod.Tasks.Worker`) lets one supervisor run several."
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    Options.validate!(opts, @schema)
    %{id: Keyword.get(opts, :id, __MODULE__), start: {__MODULE__, :start_link, [opts]}}
  end

  @doc false
  def mfa?({m, f, a}), do: is_atom(m) and is_atom(f) and is_list(a)
  def mfa?(_), do: false

  @doc "The task the worker is running, or nil."
  @spec current(GenServer.server()) :: Tasks.Task.t() | nil
  def current(worker), do: GenServer.call(worker, :current)

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    state = %{
      store: opts.store,
      topic: opts.topic,
      fun: opts.fun,
      ttl: opts.ttl,
      # options of the public Synod.Tasks calls; the budget of reserve/5
      call: [call_timeout: opts.call_timeout],
      budget: Deadline.budget(:infinity, opts.call_timeout),
      call_timeout: opts.call_timeout,
      idle_watch: nil,
      job: nil,
      # the last undecodable task record reported
      skipped: nil
    }

    {:ok, state, {:continue, :reserve}}
  end

  # ---- idle: reserve, or wait on the topic ----

  @impl true
  def handle_continue(:reserve, %{job: nil} = s) do
    case Tasks.reserve(s.store, s.topic, self(), s.ttl, s.budget) do
      {:ok, task} ->
        {:noreply, start_job(s, task)}

      {:none, rev} ->
        case Store.watch(s.store, Tasks.topic_prefix(s.topic), prefix: true, from: rev + 1) do
          {:ok, ref} -> {:noreply, %{s | idle_watch: ref}}
          {:error, _} -> retry_later(s)
        end

      # Set aside by the reserve: report it once and go on (the same id again
      # means setting it aside failed: retry later, without logging again).
      {:error, {:undecodable_task, id}} when id == s.skipped ->
        retry_later(s)

      {:error, {:undecodable_task, id}} ->
        Logger.warning("Synod.Tasks.Worker #{s.topic}: skipped undecodable task record #{id}")
        {:noreply, %{s | skipped: id}, {:continue, :reserve}}

      {:error, reason} ->
        Logger.debug("Synod.Tasks.Worker #{s.topic}: reserve failed: #{inspect(reason)}")
        retry_later(s)
    end
  end

  defp retry_later(s) do
    Process.send_after(self(), :retry, 200)
    {:noreply, s}
  end

  @impl true
  def handle_call(:current, _from, s), do: {:reply, s.job && s.job.task, s}
  def handle_call(_unknown, _from, s), do: {:reply, {:error, :unknown_call}, s}

  @impl true
  def handle_cast(_unknown, s), do: {:noreply, s}

  @impl true
  def handle_info(:retry, %{job: nil, idle_watch: nil} = s),
    do: {:noreply, s, {:continue, :reserve}}

  def handle_info({:synod_watch, ref, _}, %{idle_watch: ref} = s), do: wake(s)
  def handle_info({:DOWN, ref, :process, _, _}, %{idle_watch: ref} = s), do: wake(s)

  # ---- busy: the function runs, the lease is renewed and watched ----

  # The keeper asks before each renewal: answering is what a suspended
  # worker cannot do. A renewal the store did not answer is only reported
  # (the keeper tries again; the lease key watch still reports a loss at once).
  def handle_info({:synod_lease, keeper, event}, %{job: %{keeper: keeper}} = s) do
    case event do
      :tick ->
        LeaseKeeper.renew(keeper)
        {:noreply, s}

      {:lost, _lease} ->
        lost(s, :lease_expired)

      _renewed_or_error ->
        {:noreply, s}
    end
  end

  def handle_info({:synod_watch, ref, events}, %{job: %{lease_watch: ref}} = s) do
    cond do
      is_list(events) and Enum.any?(events, &match?({:delete, _, _, _}, &1)) ->
        lost(s, :lease_expired)

      is_list(events) ->
        {:noreply, s}

      # The watch ended (compacted history): check the lease now and watch again.
      true ->
        {:noreply, rewatch_and_renew(s)}
    end
  end

  def handle_info({:DOWN, ref, :process, _, _}, %{job: %{lease_watch: ref}} = s),
    do: {:noreply, rewatch_and_renew(s)}

  def handle_info({:DOWN, ref, :process, _, reason}, %{job: %{monitor: ref} = job} = s) do
    stop_job_watch(s, job)
    # The change that ends the task revokes its lease.
    LeaseKeeper.stop(job.keeper)

    result =
      case reason do
        {:synod_task_done, :ok} ->
          Tasks.terminate(s.store, job.task, self(), s.call)

        {:synod_task_done, {:ok, _}} ->
          Tasks.terminate(s.store, job.task, self(), s.call)

        {:synod_task_done, {:snooze, ms}} ->
          Tasks.snooze(s.store, job.task, self(), ms, s.call)

        {:synod_task_done, {:error, e}} ->
          Tasks.fail(s.store, job.task, self(), e, s.call)

        {:synod_task_done, other} ->
          Tasks.fail(s.store, job.task, self(), {:bad_result, other}, s.call)

        crash ->
          Tasks.fail(s.store, job.task, self(), {:crashed, crash}, s.call)
      end

    with {:error, why} <- result do
      Logger.info("Synod.Tasks.Worker #{s.topic}: task #{job.task.id} not ended: #{inspect(why)}")
    end

    {:noreply, %{s | job: nil}, {:continue, :reserve}}
  end

  def handle_info(_stale, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, %{job: %{} = job} = s) do
    Process.exit(job.runner, :kill)
    LeaseKeeper.stop(job.keeper)
    Tasks.revoke_lease(s.store, job.task, job.task.record_ver, s.call)
  end

  def terminate(_reason, _s), do: :ok

  defp wake(s) do
    Watch.stop(s.store, s.idle_watch)
    {:noreply, %{s | idle_watch: nil}, {:continue, :reserve}}
  end

  defp start_job(s, task) do
    fun = s.fun

    # Linked and monitored at once: a function that returns at once still
    # leaves its result in the monitor's message (not :noproc).
    {runner, monitor} =
      :erlang.spawn_opt(
        fn ->
          result =
            case fun do
              {m, f, a} -> apply(m, f, [task | a])
              f -> f.(task)
            end

          exit({:synod_task_done, result})
        end,
        [:link, :monitor]
      )

    {:ok, keeper} =
      LeaseKeeper.start(s.store, s.ttl,
        lease: task.lease_id,
        pace: :owner,
        notify: true,
        on_owner_exit: :revoke,
        call_timeout: s.call_timeout
      )

    job = %{
      task: task,
      runner: runner,
      monitor: monitor,
      keeper: keeper,
      lease_watch: nil
    }

    %{s | job: watch_lease(s, job)}
  end

  # Watches the task's lease key from just after the last write this
  # worker saw succeed: a delete after that is the lease's end.
  defp watch_lease(s, job) do
    case Store.watch(s.store, Tasks.lease_key(job.task), from: job.task.record_ver + 1) do
      {:ok, ref} -> %{job | lease_watch: ref}
      {:error, _} -> %{job | lease_watch: nil}
    end
  end

  # The watch ended: renew now (a lost lease is reported) and watch again.
  defp rewatch_and_renew(s) do
    job = s.job
    if job.lease_watch, do: Watch.stop(s.store, job.lease_watch)
    LeaseKeeper.renew(job.keeper)
    %{s | job: watch_lease(s, %{job | lease_watch: nil})}
  end

  defp lost(s, reason) do
    job = s.job
    Process.unlink(job.runner)
    Process.exit(job.runner, :kill)
    Process.demonitor(job.monitor, [:flush])
    LeaseKeeper.stop(job.keeper)
    stop_job_watch(s, job)
    Logger.info("Synod.Tasks.Worker #{s.topic}: lost task #{job.task.id}: #{inspect(reason)}")
    {:noreply, %{s | job: nil}, {:continue, :reserve}}
  end

  defp stop_job_watch(s, job) do
    if job.lease_watch, do: Watch.stop(s.store, job.lease_watch)
    :ok
  end
end
