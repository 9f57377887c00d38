defmodule Synod.Tasks do
  @moduledoc """
  A task store with leases on a replicated store (`Synod.Store`): tasks are
  created under a topic, reserved by workers under a store lease, kept
  alive, snoozed, failed or terminated, following one status machine
  (`Synod.Tasks.Rules`):

      :starting -> :running | :failed | :terminated
      :running  -> :failed | :snoozed | :terminated | :starting
      :snoozed  -> :starting | :failed | :terminated

  Every function takes the store's group name first, and the options
  `timeout:` (ms for the whole call, default 5000) and `call_timeout:`
  (each store round trip, default 5000); `reserve_task/4` also `ttl:` and
  its `timeout:` is how long it waits for a task (default 0). A store that
  does not run is `{:error, {:unknown_store, store}}` at once.

      {:ok, task} = Synod.Tasks.create_task(:jobs, %{topic: "mail", data: %{to: "a@b"}})
      {:ok, task} = Synod.Tasks.reserve_task(:jobs, "mail", self(), ttl: 10_000)
      {:ok, _}    = Synod.Tasks.extend_lease(:jobs, task, self())
      {:ok, done} = Synod.Tasks.terminate(:jobs, task, self())
      :terminated = done.status

  `Synod.Tasks.Worker` runs this loop for you under a supervisor.

  ## Time

  A running task's lease is a store lease: the store's leader counts it
  down on its monotonic clock and, when it runs out, deletes the task's
  lease key through the log. A snooze is a store lease too. A task whose
  lease key vanished reads as `:starting` and can be reserved again; the
  old owner's calls then fail with `:lease_expired` (nobody reserved it
  since) or `:wrong_owner` (somebody did). No sweeper races the workers,
  and no worker's clock decides anything. `extend_lease/4` restarts the
  countdown and answers only once the leader confirmed it still leads.

  ## Every change is one conditional txn

  A change reads the record and its lease key in one txn, decides with
  `Synod.Tasks.Rules.plan/3` (transition table, owner, record version),
  and writes in one txn that compares the record's mod_revision
  (`record_ver`) and the lease key's lease to what was read. A refused
  change returns `{:error, reason}` and writes nothing; a txn that lost a
  race writes nothing and is decided again on a fresh read. Reasons:
  `:no_task_found`, `:already_done` (failed or terminated), `:wrong_owner`,
  `:lease_expired`, `:record_changed` (`revoke_lease/4`) and
  `{:invalid_transition, from, to}`.

  The caller of `snooze/5`, `fail/5` and `terminate/4` must be the task's
  owner: the pid holding a running task's lease, or `nil` for a task
  nobody holds (`:starting` or `:snoozed`), so that `terminate(store, id,
  nil)` cancels a task before it runs.

  A task can be passed as its id or as a `Synod.Tasks.Task` read before: a
  struct saves the reads (its topic and place locate its lease key, and
  `terminate/4`, `fail/5`, `snooze/5` and `revoke_lease/4` write at once
  with a compare of the stored record's bytes against it), and nothing in
  it is trusted: a struct that is not what the store holds costs a failed
  compare, and the change is decided on the record read then.

  A terminate or fail by the owner's own process keeps the task's lease,
  now holding no key, as that process's spare: its next `reserve_task/4` of
  the same `ttl:` restarts it with a keep-alive instead of a new grant
  (docs/coordination.md, "The spare lease"). A reservation also reads the
  next task in line; the same process's next reservation of that topic is
  then one txn (no scan) that compares what was read, including that every
  older task still holds its lease ("Reserve ahead").

  docs/coordination.md has the key layout, the txn of each transition and
  the figures.

  Each change a node makes is the event `[:synod, :tasks, :transition]`
  (`Synod.Telemetry`; metadata `store`, `task`, `from` (nil for a
  creation), `to`).
  """

  alias Synod.Coord.{Deadline, Options, Recipe, Stores, Watch}
  alias Synod.Store
  alias Synod.Store.Command
  alias Synod.Tasks.{Rules, Task}

  @root "synod/t/"
  @max_batch 32
  @read_chunk 60
  @default_ttl 30_000

  @call [
    timeout: [type: :timeout, default: 5_000],
    call_timeout: [type: :pos_integer, default: 5_000]
  ]
  @task_fields [
    id: [type: {:binary, 1024}],
    group_id: [type: {:binary, 1024}],
    topic: [type: {:binary, 255}, required: true],
    sub_topic: [type: {:binary, 255}, default: "default"],
    data: [type: :any, default: nil]
  ]
  @filters [
    from: [type: :integer],
    to: [type: :integer],
    topic: [type: {:binary, 255}],
    sub_topic: [type: {:binary, 255}],
    status: [type: {:or, [{:in, Rules.statuses()}, {:list, {:in, Rules.statuses()}}]}]
  ]
  @cursor [limit: [type: {:integer, 1, 1000}, default: 100], after: [type: :any, default: nil]]
  @reserve [
    ttl: [type: {:ms, 1}, default: @default_ttl],
    timeout: [type: :timeout, default: 0],
    call_timeout: [type: :pos_integer, default: 5_000]
  ]

  @type store :: atom()
  @type task_ref :: binary() | Task.t()
  @type reason :: :no_task_found | Rules.reason() | term()

  @doc """
  The allowed status transitions, as data: each status and the statuses
  it may go to (`:failed` and `:terminated` are final).

      %{starting: [:running, :failed, :terminated], ...} = Synod.Tasks.transitions()
  """
  @spec transitions() :: %{Task.status() => [Task.status()]}
  defdelegate transitions(), to: Rules

  # ---- creating ----

  @doc """
  Creates a task in status `:starting`. `attrs` (map or keyword): `topic`
  (required, binary), `id` (binary; default: a random one), `group_id`
  (default: the id), `sub_topic` (default `"default"`), `data` (any term).
  Options: `timeout:`, `call_timeout:`. `{:error, :already_exists}` if the
  id is taken.
  """
  @spec create_task(store(), map() | keyword(), keyword()) ::
          {:ok, Task.t()} | {:error, :already_exists | term()}
  def create_task(store, attrs, opts \\ []) do
    case create_tasks(store, [attrs], opts) do
      {:ok, [task]} -> {:ok, task}
      {:error, {:already_exists, _}} -> {:error, :already_exists}
      error -> error
    end
  end

  @doc """
  Creates up to #{@max_batch} tasks of one topic atomically (all or none),
  in list order. `{:error, {:already_exists, ids}}` names the ids taken.
  """
  @spec create_tasks(store(), [map() | keyword()], keyword()) ::
          {:ok, [Task.t()]} | {:error, {:already_exists, [binary()]} | term()}
  def create_tasks(store, attrs_list, opts \\ []) do
    with {:ok, call} <- call(store, opts) do
      Options.check!(attrs_list, :tasks, {:custom, &batch?/1, "a list of 1..#{@max_batch} tasks"})

      now = System.system_time(:millisecond)
      tasks = Enum.map(attrs_list, &new_task(&1, now))
      topic = hd(tasks).topic

      ids = Enum.map(tasks, & &1.id)
      same = {:custom, &(&1 == topic), "the first task's topic #{inspect(topic)}"}
      Enum.each(tasks, &Options.check!(&1.topic, :topic, same))
      Options.check!(ids, :tasks, {:custom, &(&1 == Enum.uniq(&1)), "tasks with distinct ids"})

      build = fn first ->
        placed = place(tasks, first)

        ops =
          Enum.flat_map(placed, fn t ->
            [
              {:put, rec_key(t.id), encode(t)},
              {:put, active_key(t), t.id},
              {:put, group_prefix(t.group_id) <> t.id, ""}
            ]
          end)

        compares = Enum.map(tasks, &{:absent, rec_key(&1.id)})
        {compares, ops, length(tasks), Enum.map(tasks, &{:range, rec_key(&1.id)})}
      end

      # The records as this call wrote them: the store applied it unheard.
      landed = fn results, first ->
        case results do
          [{:range, [kv], _, _} | _] ->
            mine = %{hd(place(tasks, first)) | record_ver: kv.mod_revision}
            if decode(kv) == {:ok, mine}, do: {:ok, kv.mod_revision}, else: false

          _ ->
            false
        end
      end

      case Recipe.append(store, counter(topic), build, landed, call) do
        {:ok, rev, first} ->
          Enum.each(tasks, &transition(store, &1.id, nil, :starting))
          {:ok, Enum.map(place(tasks, first), &%{&1 | record_ver: rev})}

        {:refused, results} ->
          taken = for {{:range, [_ | _], _, _}, t} <- Enum.zip(results, tasks), do: t.id
          {:error, {:already_exists, taken}}

        error ->
          error
      end
    end
  end

  defp place(tasks, first), do: Enum.with_index(tasks, fn t, i -> %{t | seq: first + i} end)

  defp new_task(attrs, now) do
    attrs = Options.validate!(attrs, @task_fields, "task field")
    id = Map.get_lazy(attrs, :id, &random_id/0)

    %Task{
      id: id,
      group_id: Map.get(attrs, :group_id, id),
      topic: attrs.topic,
      sub_topic: attrs.sub_topic,
      data: attrs.data,
      created_at: now,
      updated_at: now
    }
  end

  defp random_id, do: Base.encode32(:rand.bytes(10), case: :lower, padding: false)

  # ---- reserving ----

  @doc """
  Leases the oldest reservable task of `topic` to `pid`: one that is
  `:starting`, or whose lease expired, or whose snooze ended. Returns the
  task (`:running`, owned by `pid`, with its `lease_id` and `record_ver`)
  or `nil` when there is none.

  Options: `ttl:` the lease's TTL in ms (default #{@default_ttl});
  `timeout:` how long to wait in total for a reservable task, on a store
  watch (ms or `:infinity`; default 0: answer at once); `call_timeout:`
  each store round trip (ms, default 5000).

  A task record that does not decode (not written by `Synod.Tasks`) is
  answered once as `{:error, {:undecodable_task, id}}` and taken out of
  the topic's reservation order (its record stays, and `task/3` names it
  the same way); the next reservation goes past it.
  """
  @spec reserve_task(store(), binary(), pid(), keyword()) ::
          {:ok, Task.t() | nil} | {:error, term()}
  def reserve_task(store, topic, pid, opts \\ []) do
    args!(store, topic, pid)
    opts = Options.validate!(opts, @reserve)
    call = Deadline.budget(:infinity, opts.call_timeout)

    with :ok <- Stores.check(store),
         do: reserve_until(store, topic, pid, opts.ttl, call, Deadline.new(opts.timeout))
  end

  defp reserve_until(store, topic, pid, ttl, call, deadline) do
    case reserve(store, topic, pid, ttl, call) do
      {:ok, task} ->
        {:ok, task}

      {:none, rev} ->
        case Watch.await_change(store, topic_root(topic), rev, deadline, Deadline.opts(call)) do
          :changed -> reserve_until(store, topic, pid, ttl, call, deadline)
          :timeout -> {:ok, nil}
          error -> error
        end

      error ->
        error
    end
  end

  @doc false
  # One reservation attempt, for `Synod.Tasks.Worker` (arguments checked
  # by its caller): {:ok, task}, or {:none, revision} (watch the topic
  # from there: `topic_prefix/1`), or an error.
  @spec reserve(store(), binary(), pid(), pos_integer(), Deadline.budget()) ::
          {:ok, Task.t()} | {:none, non_neg_integer()} | {:error, term()}
  def reserve(store, topic, pid, ttl, call), do: try_reserve(store, topic, pid, ttl, call, nil, 0)

  defp args!(store, topic, pid) do
    Options.check!(store, :store, :atom)
    Options.check!(topic, :topic, {:binary, 255})
    Options.check!(pid, :pid, :pid)
  end

  # `lease` is the lease in hand (`{id, granted_at}`, from a lost race) or
  # nil; once the scan found a candidate, a missing lease is fetched while
  # the candidate's record is read (`lease_ahead/3`).
  defp try_reserve(store, _topic, _pid, _ms, call, lease, 100) do
    Recipe.drop_lease(store, lease && elem(lease, 0), call)
    {:error, :contention}
  end

  defp try_reserve(store, topic, pid, ms, call, nil, 0) do
    case ahead_reserve(store, topic, pid, ms, call) do
      :no -> scan_reserve(store, topic, pid, ms, call, nil, 0)
      {:again, lease} -> scan_reserve(store, topic, pid, ms, call, lease, 1)
      result -> result
    end
  end

  defp try_reserve(store, topic, pid, ms, call, lease, tries),
    do: scan_reserve(store, topic, pid, ms, call, lease, tries)

  defp scan_reserve(store, topic, pid, ms, call, lease, tries) do
    again = fn lease -> try_reserve(store, topic, pid, ms, call, lease, tries + 1) end

    case candidate(store, topic, pid, ms, call, lease) do
      {:ok, view, lease} ->
        case Recipe.fresh_lease(store, lease, ms, call) do
          {:ok, {id, _} = lease} ->
            later = Process.get(later_key(store, topic), [])
            ahead = {topic, later, ahead_reads(topic, later)}

            case apply_plan(store, view, {:reserve, pid, id, ms}, call, 0, [], ahead) do
              {:ok, task} -> {:ok, task}
              {:error, {:store, :lease_not_found}} -> again.(nil)
              {:error, {:store, reason}} -> fail_reserve(store, lease, reason, call)
              {:error, _lost_race} -> again.(lease)
            end

          error ->
            error
        end

      {:taken, lease} ->
        again.(lease)

      {:none, rev} ->
        {:none, rev}

      {:error, reason, lease} ->
        fail_reserve(store, lease, reason, call)
    end
  end

  # ---- reserving ahead: one txn, no scan ----
  #
  # A reservation's txn also reads the task the scan saw next in line (its
  # record, its lease key) and how many active keys and lease keys lie below
  # it. If that task was reservable and the two counts were equal (every
  # older task held a lease or a snooze: lease keys exist only beside active
  # keys), the process keeps that view (`{__MODULE__, :ahead, store,
  # topic}`). Its next reservation of the topic is then one txn with no scan
  # before it: it compares the record's mod_revision, the lease key's state
  # and both counts to what was read, so it applies only if that task is
  # still the oldest reservable one; it reads the next one ahead the same
  # way. The lease is the spare restarted by a keep-alive sent at the same
  # time (no log write). A terminate or fail of one of this process's own
  # older tasks deletes one active key and one lease key: the counts kept are
  # lowered to match. Anything else that changed makes the compares fail and
  # the reservation scans as before (`scan_reserve/7`); nothing kept is
  # trusted without a compare.

  defp ahead_key(store, topic), do: {__MODULE__, :ahead, store, topic}
  defp later_key(store, topic), do: {__MODULE__, :later, store, topic}

  # With a view kept ahead and the spare of the same TTL: one txn.
  # `:no` when there is nothing to try, `{:again, lease}` when the compares
  # (or the spare) failed: scan then, with the lease the keep-alive left.
  defp ahead_reserve(store, topic, pid, ms, call) do
    with %{view: {t, live} = view, below: below, later: rest} <-
           Process.delete(ahead_key(store, topic)),
         {id, ^ms} <- Process.get({__MODULE__, :spare, store}),
         request = {:reserve, pid, id, ms},
         {:ok, new, effects} <- Rules.plan(view, request, System.system_time(:millisecond)) do
      lease = lease_ahead(store, ms, call)

      compares = [
        {:mod_revision, rec_key(t.id), :==, t.record_ver},
        lease_compare(t, live),
        {:count, active_prefix(topic), [range_end: active_key(t)], :==, below},
        {:count, lease_prefix(topic), [range_end: lease_key(t)], :==, below}
      ]

      writes = [{:put, rec_key(t.id), encode(new)} | key_ops(new, effects)]

      result =
        Store.txn(store, compares, writes ++ ahead_reads(topic, rest), [], Deadline.opts(call))

      case {result, lease_wait(lease)} do
        {{:ok, rev, true, results}, {^id, _}} ->
          keep_ahead(store, topic, rest, Enum.drop(results, length(writes)))
          transition(store, t.id, Rules.effective(t, live).status, new.status)
          {:ok, Rules.effective(%{new | record_ver: rev}, true)}

        # Lost a race, or the spare ran out (a reservation applied with it
        # ends with the lease, as one whose worker died).
        {{:ok, _, _, _}, got} ->
          {:again, got}

        {{:error, :lease_not_found}, got} ->
          {:again, got}

        {{:error, reason}, got} ->
          fail_reserve(store, got, reason, call)
      end
    else
      _ -> :no
    end
  end

  # The reads of the first of `later` (`{seq, id}` of the free tasks the
  # scan saw behind the one reserved), for a reservation txn's success
  # branch: its record and lease key, and the active and lease keys below it.
  defp ahead_reads(_topic, []), do: []

  defp ahead_reads(topic, [{seq, id} | _]) do
    next = %Task{id: id, topic: topic, seq: seq}

    view_reads(next) ++
      [
        {:range, active_prefix(topic), range_end: active_key(next), count_only: true},
        {:range, lease_prefix(topic), range_end: lease_key(next), count_only: true}
      ]
  end

  # Keeps the view `ahead_reads/2` read if that task is reservable and every
  # task below it held a lease key then; else keeps nothing.
  defp keep_ahead(store, topic, [{seq, id} | rest], [
         rec,
         lkey,
         {:range, _, a, _},
         {:range, _, b, _}
       ]) do
    with {:ok, {t, _} = view} <- view_of([rec, lkey]),
         true <- a == b and t.id == id and t.seq == seq and t.topic == topic,
         {:ok, _, _} <- Rules.plan(view, {:reserve, self(), 1, 1}, 0) do
      Process.put(ahead_key(store, topic), %{view: view, below: a, later: rest})
      Process.put({__MODULE__, :next, store, topic}, {seq, id})
    else
      _ -> Process.delete(ahead_key(store, topic))
    end
  end

  defp keep_ahead(store, topic, _later, _results), do: Process.delete(ahead_key(store, topic))

  # A final change of a task below the kept view: with its lease key (it
  # was live) both counts lost one; without, they no longer match.
  defp lower_ahead(store, t, live) do
    case Process.get(ahead_key(store, t.topic)) do
      %{view: {h, _}, below: below} = kept when t.seq < h.seq and live and below > 0 ->
        Process.put(ahead_key(store, t.topic), %{kept | below: below - 1})

      %{view: {h, _}} when t.seq < h.seq ->
        Process.delete(ahead_key(store, t.topic))

      _ ->
        :ok
    end
  end

  # ---- the caller's spare lease ----
  #
  # A terminate or fail by the owner's own process leaves the task's lease
  # with no key on it (its one key, the task's lease key, is deleted by the
  # txn). Instead of revoking it (a log write) and granting a new one for
  # the next reserve (another), the process keeps it, one per store, and
  # the next reserve of the same TTL restarts its countdown with
  # keep_alive/3 (the leader confirms its leadership: no log write) and
  # uses it. A spare that is never used expires with its TTL, holding no
  # key.

  # Fetches the lease of a reservation in a process of its own, so that it
  # overlaps the read of the candidate: the spare restarted at its full TTL
  # (keep_alive/3 answers only once the leader confirmed it leads), else a
  # new grant. `lease_wait/1` answers `{id, sent_at}`, or nil when neither
  # worked (the reserve then grants as before).
  defp lease_ahead(store, ms, call) do
    spare = Process.delete({__MODULE__, :spare, store})
    parent = self()
    ref = make_ref()
    {_pid, monitor} = spawn_monitor(fn -> send(parent, {ref, obtain(store, spare, ms, call)}) end)
    {ref, monitor}
  end

  defp lease_wait({ref, monitor}) do
    receive do
      {^ref, lease} ->
        Process.demonitor(monitor, [:flush])
        lease

      {:DOWN, ^monitor, :process, _, _} ->
        nil
    end
  end

  defp obtain(store, {id, ms}, ms, call) do
    sent = System.monotonic_time(:millisecond)

    case Store.keep_alive(store, id, Deadline.opts(call)) do
      {:ok, ^ms} -> {id, sent}
      _expired_or_error -> obtain(store, nil, ms, call)
    end
  end

  defp obtain(store, {id, _other_ttl}, ms, call) do
    Recipe.drop_lease(store, id, call)
    obtain(store, nil, ms, call)
  end

  defp obtain(store, nil, ms, call) do
    case Recipe.fresh_lease(store, nil, ms, call) do
      {:ok, lease} -> lease
      {:error, _} -> nil
    end
  end

  # Keeps `lease` (`{id, _}` or an id, of `ms`, holding no key) as this
  # process's spare; one spare per store: an older one is revoked.
  defp spare(_store, nil, _ms, _call), do: :ok
  defp spare(store, {id, _}, ms, call), do: spare(store, id, ms, call)

  defp spare(store, id, ms, call) do
    case Process.put({__MODULE__, :spare, store}, {id, ms}) do
      {old, _} when old != id -> Recipe.drop_lease(store, old, call)
      _ -> :ok
    end
  end

  # The first task of the topic without a live lease key, read with its
  # lease key (`{:ok, view, lease}`); `{:taken, lease}` when it changed
  # between the scan and the read. The lease in hand comes back, or the one
  # fetched meanwhile (nil if that failed).
  defp candidate(store, topic, pid, ms, call, lease) do
    hint = Process.get({__MODULE__, :next, store, topic})
    # A hint says the scan will likely find a task: fetch the lease now.
    ahead = if lease == nil and hint != nil, do: lease_ahead(store, ms, call)

    case scan(store, topic, hint, call) do
      {:ok, akv, read} ->
        ahead = ahead || (lease == nil and lease_ahead(store, ms, call))
        read = read || read_view(store, probe(topic, akv), call)
        lease = if ahead, do: lease_wait(ahead), else: lease

        case read do
          {:ok, view} ->
            if match?({:ok, _, _}, Rules.plan(view, {:reserve, pid, 0, ms}, 0)),
              do: {:ok, view, lease},
              else: {:taken, lease}

          {:error, :no_task_found} ->
            {:taken, lease}

          {:error, {:undecodable_task, _id} = undecodable} ->
            set_aside(store, akv, call)
            spare(store, lease, ms, call)
            {:error, undecodable, nil}

          {:error, {:store, reason}} ->
            {:error, reason, lease}
        end

      {:none, rev} ->
        # A lease in hand holds no key: kept for the next reserve.
        spare(store, if(ahead, do: lease_wait(ahead), else: lease), ms, call)
        {:none, rev}

      {:error, reason} ->
        {:error, reason, if(ahead, do: lease_wait(ahead), else: lease)}
    end
  end

  defp probe(topic, akv) do
    %Task{id: akv.value, topic: topic, seq: Recipe.seq_of(akv.key, active_prefix(topic))}
  end

  # The topic's first page of active keys and lease keys in one read-only
  # txn, with the record and lease key of the task the last scan of this
  # process saw next in line (`hint`, `{seq, id}`): if that task is still
  # the first free one, its view comes from the same read (`{:ok, akv,
  # view}`), else it is read after (`{:ok, akv, nil}`). The hint is only a
  # guess about which keys to read: everything used is read now.
  defp scan(store, topic, hint, call) do
    {active, leases} = {active_prefix(topic), lease_prefix(topic)}
    extra = if hint, do: view_reads(%Task{id: elem(hint, 1), topic: topic, seq: elem(hint, 0)})
    reads = Recipe.page_reads(active, leases) ++ (extra || [])
    key = {__MODULE__, :next, store, topic}

    case Store.txn(store, [], reads, [], Deadline.opts(call)) do
      {:ok, rev, true, [ipage, cpage | views]} ->
        case Recipe.free_in([ipage, cpage], active, leases) do
          {:ok, akv} ->
            remember_next(key, ipage, cpage, akv, active, leases)
            seq = Recipe.seq_of(akv.key, active)
            read = if hint == {seq, akv.value}, do: view_of(views)
            {:ok, akv, read}

          :none ->
            Process.delete(key)
            Process.delete(later_key(store, topic))
            {:none, rev}

          {:more, _} ->
            Process.delete(key)
            Process.delete(later_key(store, topic))

            with {:ok, akv} <- Recipe.first_free(store, active, leases, call),
                 do: {:ok, akv, nil}
        end

      {:error, _} = error ->
        error
    end
  end

  # The next free task after `akv` in the same pages, as the next scan's hint,
  # and every free one after it that the pages show (`later_key/2`: the
  # tasks a reservation reads ahead, `ahead_reads/2`).
  defp remember_next(key, {:range, ikvs, count, more}, cpage, akv, active, leases) do
    {__MODULE__, :next, store, topic} = key
    later = free_after(ikvs, cpage, akv, active, leases)
    Process.put(later_key(store, topic), later)

    with [_ | _] = later <- Enum.drop_while(ikvs, &(&1.key <= akv.key)),
         {:ok, next} <- Recipe.free_in([{:range, later, count, more}, cpage], active, leases) do
      Process.put(key, {Recipe.seq_of(next.key, active), next.value})
    else
      _ -> Process.delete(key)
    end
  end

  # `{seq, id}` of the active keys after `akv` that have no lease key in the
  # page of lease keys (past its last key when it was cut, nothing is known).
  defp free_after(ikvs, {:range, lkvs, _, lmore}, akv, active, leases) do
    leased = MapSet.new(lkvs, &Recipe.suffix(&1.key, leases))
    known = if lmore, do: Recipe.suffix(List.last(lkvs).key, leases)

    for kv <- ikvs,
        kv.key > akv.key,
        suffix = Recipe.suffix(kv.key, active),
        known == nil or suffix <= known,
        not MapSet.member?(leased, suffix),
        do: {Recipe.seq_of(kv.key, active), kv.value}
  end

  # A record that does not decode would block its topic forever (it is the
  # first free entry): its active-index entry is deleted, if unchanged, so
  # reservations go past it. The record itself stays (task/3 names it).
  defp set_aside(store, akv, call) do
    _ =
      Store.txn(
        store,
        [{:mod_revision, akv.key, :==, akv.mod_revision}],
        [{:delete, akv.key}],
        [],
        Deadline.opts(call)
      )

    :ok
  end

  defp fail_reserve(store, lease, reason, call) do
    Recipe.drop_lease(store, lease && elem(lease, 0), call)
    {:error, reason}
  end

  # ---- changes by the owner ----

  @doc """
  Restarts the countdown of the task's lease (to its full TTL) for
  its owner `pid`. Errors: `:no_task_found`, `:already_done`,
  `:wrong_owner`, `:lease_expired`.
  """
  @spec extend_lease(store(), task_ref(), pid(), keyword()) ::
          {:ok, Task.t()} | {:error, reason()}
  def extend_lease(store, task, pid, opts \\ []) do
    Options.check!(pid, :pid, :pid)

    with {:ok, call} <- call(store, opts) do
      result =
        with {:ok, {t, _} = view} <- read_view(store, task, call),
             {:ok, _, _} <- Rules.plan(view, {:extend, pid}, 0),
             {:ok, _} <- keep_alive(store, t.lease_id, call) do
          apply_plan(store, view, {:extend, pid}, call)
        end

      unwrap(result)
    end
  end

  defp keep_alive(store, lease, call) do
    case Store.keep_alive(store, lease, Deadline.opts(call)) do
      {:error, :lease_not_found} -> {:error, :lease_expired}
      other -> other
    end
  end

  @doc """
  Snoozes a running task for `ms`: `:running -> :snoozed`, on a store lease
  of `ms`; when it expires the task is reservable again. The task is no
  longer `pid`'s.
  """
  @spec snooze(store(), task_ref(), pid() | nil, pos_integer(), keyword()) ::
          {:ok, Task.t()} | {:error, reason()}
  def snooze(store, task, pid, ms, opts \\ []) do
    owner!(pid)
    Options.check!(ms, :ms, {:ms, 1})

    with {:ok, call} <- call(store, opts) do
      result =
        with {:ok, view} <- read_view(store, task, call),
             {:ok, _, _} <- Rules.plan(view, {:snooze, pid, 0, ms}, 0),
             {:ok, {lease, _}} <- Recipe.fresh_lease(store, nil, ms, call) do
          case apply_plan(store, view, {:snooze, pid, lease, ms}, call) do
            {:ok, task} ->
              {:ok, task}

            error ->
              Recipe.drop_lease(store, lease, call)
              error
          end
        end

      unwrap(result)
    end
  end

  @doc "Fails the task with `error` (any term): final."
  @spec fail(store(), task_ref(), pid() | nil, term(), keyword()) ::
          {:ok, Task.t()} | {:error, reason()}
  def fail(store, task, pid, error, opts \\ []),
    do: change(store, task, {:fail, owner!(pid), error}, opts)

  @doc "Terminates (completes) the task: final."
  @spec terminate(store(), task_ref(), pid() | nil, keyword()) ::
          {:ok, Task.t()} | {:error, reason()}
  def terminate(store, task, pid, opts \\ []),
    do: change(store, task, {:terminate, owner!(pid)}, opts)

  @doc """
  Ends the lease (or snooze) of a running (or snoozed) task now, making it
  `:starting` and reservable, if its record is still at `record_ver`
  (else `:record_changed`). No owner check: this is the operator's lever.
  """
  @spec revoke_lease(store(), task_ref(), non_neg_integer(), keyword()) ::
          {:ok, Task.t()} | {:error, reason()}
  def revoke_lease(store, task, record_ver, opts \\ []) do
    Options.check!(record_ver, :record_ver, :non_neg_integer)

    change(store, task, {:revoke, record_ver}, opts)
  end

  defp change(store, task, request, opts) do
    with {:ok, call} <- call(store, opts) do
      result =
        case speculate(store, task, request, call) do
          :read ->
            with {:ok, view} <- read_view(store, task, call),
                 do: apply_plan(store, view, request, call)

          result ->
            result
        end

      unwrap(result)
    end
  end

  # A task struct the caller holds (the one reserve_task/4 or a change
  # returned) is taken as the view without a read: the txn compares the
  # record's bytes as well as its mod_revision, so it applies only if the
  # stored record is exactly the struct, and the lease key's lease; if any
  # of them differs the failure branch reads the real view and the request
  # is planned again on it. A plan the struct refuses, an id, or a record
  # too large to compare cheaply is read first (`:read`): every refusal is
  # decided on what the store holds.
  @speculate_max 4_096

  defp speculate(store, %Task{} = t, request, call) do
    bytes = encode(t)
    live = t.status in [:running, :snoozed] and t.lease_id > 0

    with true <- byte_size(bytes) <= @speculate_max,
         {:ok, _, _} <- Rules.plan({t, live}, request, 0) do
      apply_plan(store, {t, live}, request, call, 0, [{:value, rec_key(t.id), :==, bytes}])
    else
      _ -> :read
    end
  end

  defp speculate(_store, _id, _request, _call), do: :read

  # Plans `request` on `view` and writes the plan in one txn that compares
  # the record's mod_revision and the lease key's state to the view. A lost
  # race (compare failed) writes nothing and plans again on the view the
  # failure branch read.
  defp apply_plan(store, view, request, call, tries \\ 0, pin \\ [], ahead \\ nil)

  defp apply_plan(_store, _view, _request, _call, 20, _pin, _ahead), do: {:error, :contention}

  defp apply_plan(store, {t, live} = view, request, call, tries, pin, ahead) do
    with {:ok, new, effects} <- Rules.plan(view, request, System.system_time(:millisecond)) do
      compares = [
        {:mod_revision, rec_key(t.id), :==, t.record_ver},
        lease_compare(t, live) | pin
      ]

      writes = [{:put, rec_key(t.id), encode(new)} | key_ops(new, effects)]
      reads = if ahead, do: elem(ahead, 2), else: []

      case Store.txn(store, compares, writes ++ reads, view_reads(t), Deadline.opts(call)) do
        {:ok, rev, true, results} ->
          if ahead,
            do: keep_ahead(store, t.topic, elem(ahead, 1), Enum.drop(results, length(writes)))

          if effects.active == :delete, do: lower_ahead(store, t, live)
          release(store, effects.drop_lease, request, t, call)
          transition(store, t.id, Rules.effective(t, live).status, new.status)
          {:ok, Rules.effective(%{new | record_ver: rev}, true)}

        {:ok, _, false, results} ->
          with {:ok, view} <- view_of(results),
               do: apply_plan(store, view, request, call, tries + 1, [], ahead)

        {:error, reason} ->
          {:error, {:store, reason}}
      end
    end
  end

  # The lease a change left without a key: the owner's own process keeps
  # it as its spare after a terminate or fail (the next reserve reuses it),
  # anyone else revokes it.
  defp release(store, nil, _request, _t, call), do: Recipe.drop_lease(store, nil, call)

  defp release(store, lease, request, t, call) do
    owner = elem(request, 1)

    if elem(request, 0) in [:terminate, :fail] and owner == self() and is_integer(t.lease_ms),
      do: spare(store, lease, t.lease_ms, call),
      else: Recipe.drop_lease(store, lease, call)
  end

  # [:synod, :tasks, :transition] for each change this node made (`from`
  # nil: created). A lease that expires is a transition no node makes: the
  # next change of the task reports it (e.g. from :starting on a re-reserve).
  defp transition(_store, _id, same, same), do: :ok

  defp transition(store, id, from, to),
    do:
      Synod.Telemetry.execute([:synod, :tasks, :transition], %{}, %{
        store: store,
        task: id,
        from: from,
        to: to
      })

  defp lease_compare(t, true), do: {:lease, lease_key(t), :==, t.lease_id}
  defp lease_compare(t, false), do: {:absent, lease_key(t)}

  defp key_ops(t, effects) do
    lease =
      case effects.lease_key do
        {:put, id} -> [{:put, lease_key(t), t.id, [lease: id]}]
        :delete -> [{:delete, lease_key(t)}]
        :keep -> []
      end

    if effects.active == :delete, do: [{:delete, active_key(t)} | lease], else: lease
  end

  defp unwrap({:error, {:store, reason}}), do: {:error, reason}
  defp unwrap(other), do: other

  # ---- reading ----

  @doc "The task as it is now (linearizable), or `{:error, :no_task_found}`."
  @spec task(store(), binary(), keyword()) :: {:ok, Task.t()} | {:error, reason()}
  def task(store, id, opts \\ []) do
    with {:ok, call} <- call(store, opts) do
      case read_view(store, Options.check!(id, :id, {:binary, 1024}), call) do
        {:ok, view} -> {:ok, effective(view)}
        error -> unwrap(error)
      end
    end
  end

  @doc "Every task of a group, in id order."
  @spec tasks(store(), binary(), keyword()) :: {:ok, [Task.t()]} | {:error, term()}
  def tasks(store, group_id, opts \\ []) do
    with {:ok, call} <- call(store, opts) do
      prefix = group_prefix(Options.check!(group_id, :group_id, {:binary, 1024}))

      with {:ok, kvs, _, _} <-
             Store.range(store, prefix, [prefix: true, keys_only: true] ++ Deadline.opts(call)) do
        ids =
          Enum.map(
            kvs,
            &binary_part(&1.key, byte_size(prefix), byte_size(&1.key) - byte_size(prefix))
          )

        records(store, Enum.map(ids, &{:range, rec_key(&1)}), call)
      end
    end
  end

  @doc """
  One page of the tasks that match `filters`, in id order, and the cursor
  of the next page (nil after the last). Filters (map or keyword, all
  optional): `from` / `to` (`created_at` >= from and < to, wall-clock ms),
  `topic`, `sub_topic`, `status` (one status or a list; as read: an expired
  lease reads `:starting`). Cursor: `%{limit: n}` to start (1..1000,
  default 100), then the returned one. Pages follow the id order of the
  records, so a listing never repeats or skips a task that exists
  throughout it; each page is read at its own revision.
  """
  @spec list_tasks(store(), map() | keyword(), map() | keyword() | nil, keyword()) ::
          {:ok, [Task.t()], map() | nil} | {:error, term()}
  def list_tasks(store, filters \\ %{}, cursor \\ nil, opts \\ []) do
    with {:ok, call} <- call(store, opts) do
      filters = filters!(filters)
      {limit, after_id} = cursor!(cursor)
      list_page(store, filters, limit, after_id, [], call)
    end
  end

  defp list_page(store, filters, limit, after_id, acc, call) do
    start = if after_id, do: rec_key(after_id) <> <<0>>, else: @root <> "r/"
    range = [range_end: Command.prefix_end(@root <> "r/"), limit: max(limit, 50)]

    with {:ok, kvs, _, more} <- Store.range(store, start, range ++ Deadline.opts(call)),
         {:ok, tasks} <- with_live(store, decoded(kvs), call) do
      matched = acc ++ Enum.filter(tasks, &match_filters?(&1, filters))
      last_read = if kvs == [], do: after_id, else: id_of(List.last(kvs).key)

      cond do
        length(matched) >= limit ->
          page = Enum.take(matched, limit)
          rest? = more or length(matched) > limit
          {:ok, page, if(rest?, do: %{limit: limit, after: List.last(page).id})}

        more ->
          list_page(store, filters, limit, last_read, matched, call)

        true ->
          {:ok, matched, nil}
      end
    end
  end

  @doc """
  One page of the running and snoozed tasks of `topic` (live leases only),
  in reservation order, and the next cursor (nil after the last). Cursor
  as in `list_tasks/4`.
  """
  @spec list_leased_tasks(store(), binary(), map() | keyword() | nil, keyword()) ::
          {:ok, [Task.t()], map() | nil} | {:error, term()}
  def list_leased_tasks(store, topic, cursor \\ nil, opts \\ []) do
    with {:ok, call} <- call(store, opts) do
      prefix = lease_prefix(Options.check!(topic, :topic, {:binary, 255}))
      {limit, after_seq} = cursor!(cursor)

      Options.check!(after_seq, :after, {:nil_or, :pos_integer})

      start = if after_seq, do: prefix <> Recipe.seq_suffix(after_seq) <> <<0>>, else: prefix
      range = [range_end: Command.prefix_end(prefix), limit: limit]

      with {:ok, kvs, _, more} <- Store.range(store, start, range ++ Deadline.opts(call)),
           {:ok, tasks} <- records(store, Enum.map(kvs, &{:range, rec_key(&1.value)}), call) do
        leased = Enum.filter(tasks, &(&1.status in [:running, :snoozed]))
        next = if more, do: %{limit: limit, after: Recipe.seq_of(List.last(kvs).key, prefix)}
        {:ok, leased, next}
      end
    end
  end

  # Records by key (point ranges), read in chunks, with their lease state.
  defp records(store, reads, call) do
    reads
    |> Enum.chunk_every(@read_chunk)
    |> Enum.reduce_while({:ok, []}, fn chunk, {:ok, acc} ->
      case Store.txn(store, [], chunk, [], Deadline.opts(call)) do
        {:ok, _, true, results} ->
          {:cont, {:ok, acc ++ decoded(for {:range, [kv], _, _} <- results, do: kv)}}

        error ->
          {:halt, error}
      end
    end)
    |> case do
      {:ok, tasks} -> with_live(store, tasks, call)
      error -> error
    end
  end

  # Effective status of stored tasks: running/snoozed ones need their lease
  # keys (read in chunks, keys only).
  defp with_live(store, tasks, call) do
    leased = Enum.filter(tasks, &(&1.status in [:running, :snoozed]))

    leased
    |> Enum.chunk_every(2 * @read_chunk)
    |> Enum.reduce_while({:ok, %{}}, fn chunk, {:ok, acc} ->
      reads = Enum.map(chunk, &{:range, lease_key(&1), keys_only: true})

      case Store.txn(store, [], reads, [], Deadline.opts(call)) do
        {:ok, _, true, results} ->
          live =
            for {t, {:range, kvs, _, _}} <- Enum.zip(chunk, results), into: acc do
              {t.id, match?([%{lease: l}] when l == t.lease_id, kvs)}
            end

          {:cont, {:ok, live}}

        error ->
          {:halt, error}
      end
    end)
    |> case do
      {:ok, live} -> {:ok, Enum.map(tasks, &Rules.effective(&1, Map.get(live, &1.id, true)))}
      error -> error
    end
  end

  # {task, lease key alive?} from one consistent read. A task struct gives
  # the lease key at once; an id costs a read of the record first (its
  # topic and place never change).
  defp read_view(store, %Task{} = t, call) do
    case Store.txn(store, [], view_reads(t), [], Deadline.opts(call)) do
      {:ok, _, true, results} -> view_of(results)
      {:error, reason} -> {:error, {:store, reason}}
    end
  end

  defp read_view(store, id, call) when is_binary(id) do
    case Store.get(store, rec_key(id), Deadline.opts(call)) do
      {:ok, nil} -> {:error, :no_task_found}
      {:ok, kv} -> with {:ok, t} <- decode(kv), do: read_view(store, t, call)
      {:error, reason} -> {:error, {:store, reason}}
    end
  end

  defp read_view(_store, other, _call),
    do:
      Options.check!(other, :task, {:custom, &is_struct(&1, Task), "an id or a Synod.Tasks.Task"})

  defp view_reads(t), do: [{:range, rec_key(t.id)}, {:range, lease_key(t)}]

  defp view_of([{:range, [], _, _}, _]), do: {:error, :no_task_found}

  defp view_of([{:range, [rkv], _, _}, {:range, lkvs, _, _}]) do
    with {:ok, t} <- decode(rkv),
         do: {:ok, {t, match?([%{lease: l}] when l == t.lease_id and l > 0, lkvs)}}
  end

  defp effective({t, live}), do: Rules.effective(t, live)

  # ---- layout: synod/t/ r/<id> records, x/<topic> a<seq> active, l<seq> lease keys,
  #      n/<topic> counters, g/<group><id> group index ----

  defp rec_key(id), do: @root <> "r/" <> id
  defp topic_root(topic), do: @root <> "x/" <> Recipe.segment(topic)
  defp active_prefix(topic), do: topic_root(topic) <> "a"
  defp lease_prefix(topic), do: topic_root(topic) <> "l"
  defp active_key(t), do: active_prefix(t.topic) <> Recipe.seq_suffix(t.seq)
  defp counter(topic), do: @root <> "n/" <> Recipe.segment(topic)
  defp group_prefix(group), do: @root <> "g/" <> Recipe.segment(group)

  @doc false
  # The key whose deletion means the task's lease (or snooze) is over; the
  # worker watches it.
  @spec lease_key(Task.t()) :: binary()
  def lease_key(t), do: lease_prefix(t.topic) <> Recipe.seq_suffix(t.seq)

  @doc false
  # The prefix whose changes may make a task of `topic` reservable.
  @spec topic_prefix(binary()) :: binary()
  def topic_prefix(topic), do: topic_root(topic)

  defp encode(t), do: :erlang.term_to_binary(Map.from_struct(%{t | record_ver: 0}))

  # [:safe]: a record read from the store never creates atoms on this node.
  # A record that is not a task's (not written by this module, or holding
  # an atom this node does not know) is {:error, {:undecodable_task, id}}:
  # nothing read from the store crashes the reader.
  defp decode(kv) do
    case :erlang.binary_to_term(kv.value, [:safe]) do
      %{id: id, topic: topic, status: status, seq: seq} = fields
      when is_binary(id) and is_binary(topic) and is_integer(seq) and seq >= 0 and
             status in [:starting, :running, :snoozed, :failed, :terminated] ->
        {:ok, %{struct(Task, fields) | record_ver: kv.mod_revision}}

      _ ->
        {:error, {:undecodable_task, id_of(kv.key)}}
    end
  rescue
    ArgumentError -> {:error, {:undecodable_task, id_of(kv.key)}}
  end

  # Listings leave out records that do not decode (task/3 names them).
  defp decoded(kvs), do: for(kv <- kvs, {:ok, t} <- [decode(kv)], do: t)

  defp id_of(key),
    do: binary_part(key, byte_size(@root) + 2, byte_size(key) - byte_size(@root) - 2)

  # ---- arguments ----

  # Validates the options (raising on a bad one), then checks the store:
  # the options of each store round trip, bounded by call_timeout and by
  # what is left of the total timeout.
  defp call(store, opts) do
    Options.check!(store, :store, :atom)
    opts = Options.validate!(opts, @call)

    with :ok <- Stores.check(store) do
      {:ok, Deadline.budget(opts.timeout, opts.call_timeout)}
    end
  end

  defp owner!(pid), do: Options.check!(pid, :owner, {:nil_or, :pid})

  defp batch?(list), do: is_list(list) and list != [] and length(list) <= @max_batch

  defp filters!(filters) do
    filters = Options.validate!(filters, @filters, "filter")

    case filters do
      %{status: status} when is_atom(status) -> %{filters | status: [status]}
      _ -> filters
    end
  end

  defp match_filters?(t, f) do
    Enum.all?(f, fn
      {:from, ms} -> t.created_at >= ms
      {:to, ms} -> t.created_at < ms
      {:topic, topic} -> t.topic == topic
      {:sub_topic, sub} -> t.sub_topic == sub
      {:status, list} -> t.status in list
    end)
  end

  defp cursor!(nil), do: {100, nil}

  defp cursor!(cursor) do
    cursor = Options.validate!(cursor, @cursor, "cursor field")
    {cursor.limit, cursor.after}
  end
end
