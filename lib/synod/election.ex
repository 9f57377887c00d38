defmodule Synod.Election do
  @moduledoc """
  Leader election among TTL candidates, on a `Synod.Store`.

  A candidate is a process with a unique candidate id in a named election.
  Once started it claims the election's seat (the key `<root><election>`,
  root `"synod/election/"` unless the `root:` option says otherwise) with a
  lease of `ttl` ms, renews the lease every `ttl / 3`, and claims again
  whenever the seat empties — learned from a watch on the seat, never by
  polling.

  The lease is held by the candidate's `Synod.Coord.LeaseKeeper`
  (`on_owner_exit: :expire`, `pace: :owner`): it renews only when the
  candidate process answers (a suspended or stuck candidate renews
  nothing), and when the candidate process dies the lease is left to
  expire at its TTL — the leadership ends then, and a candidate restarted
  with the same id before that adopts the seat.

  Each change of this candidate's leadership is the event
  `[:synod, :election, :leader]` (`Synod.Telemetry`; metadata `store`,
  `election`, `leader`, `previous`).

      {:ok, c} = Synod.Election.candidate(:cfg, :scheduler, "node-a", ttl: 3_000,
                   handlers: [fn claim -> IO.inspect(claim.token, label: "leading") end])
      :ok = Synod.Election.subscribe(c)        # {:synod_election, ...} messages
      {:ok, :leader} = Synod.Election.start(c) # after the first claim attempt
      Synod.Election.leader?(c)                # true while this candidate leads
      {:ok, "node-a"} = Synod.Election.leader(:cfg, :scheduler)
      {:ok, %{name: :scheduler, leader_id: "node-a", created_at: _, revision: _}} =
        Synod.Election.get(:cfg, :scheduler)
      :ok = Synod.Election.stop(c)             # releases the seat if held

  The decisions are `Synod.Election.Candidate`'s, a pure state machine
  (event -> `{state, effects}`); this module is the process that feeds it
  events and carries out its effects (store calls in tasks, timers,
  messages).

  ## Claims

  A claim is one transaction: *if the seat is absent, put it with my
  record and my lease* — else read it. Claims compare on existence and the
  release on `mod_revision`, never on `version`, so a seat deleted and
  re-created (version 1 again) is never mistaken for the old one (no ABA).
  The **fencing token** of a leadership is the seat's `create_revision`: it
  grows with every new leadership of the election.

  The seat holds the **stored election record** (`t:record/0`): the
  election's name, the leader's candidate id, when the leadership began
  (`created_at`, wall-clock ms on the winner's node) and its `revision`
  (the seat's `create_revision`, the fencing token). `get/3` reads it by
  name; `watch/4` carries it.

  A candidate that finds the seat holding its *own* id (a candidate
  restarted with the same id while its old lease still lives, or a claim
  whose answer was lost in a timeout) adopts the seat and its lease (its
  token is unchanged) once a renewal of that lease is confirmed: that is a
  transition into leadership too.

  ## `leader?/1`: a local deadline

  Leadership ends, on the candidate's side, at a deadline kept on its own
  monotonic clock: the time a confirmed renewal (grant or keep-alive) was
  *sent*, plus `ttl`. The store's leader restarts the lease's countdown only
  when the renewal reaches it, and a new store leader restarts every
  countdown, so the lease lives at least until that deadline: when
  `leader?/1` turns false nobody else can have been granted the seat yet.
  `leader?/1` reads the deadline from an atomic without asking the candidate
  process: it turns false on time even if the process or the store is
  stuck. When the deadline passes without a confirmed renewal the candidate
  reports `{:deposed, token, :lease_expired}` and claims again (finding its
  own seat if the lease survived: same token, handlers run again).

  ## Notifications

  * Claim handlers (`handlers:` or `add_handlers/2`): 1-argument functions
    or `{module, function, args}` called with `%{election:, candidate_id:,
    token:}` on every transition into leadership, each in a process of its
    own (a handler that raises is logged). Handlers added while leading run
    from the next transition on. **When that leadership ends** (stopped,
    lease expired, seat lost), every handler process of it that still runs
    gets the exit signal `{:shutdown, {:leadership_ended, token, reason}}`
    from the candidate: it stops, or, if it traps exits, receives
    `{:EXIT, candidate_pid, {:shutdown, {:leadership_ended, token,
    reason}}}` and must stop its leader's work itself. (A candidate process
    that is killed cannot tell its handlers; `leader?/1` turns false for
    them all the same.)
  * Subscribers (`subscribe/2`) get `{:synod_election, election,
    candidate_id, event}`: `{:elected, token}`, `{:deposed, token, reason}`
    (`:stopped`, `:lease_expired`, `:seat_lost`), and `{:error, reason}`
    for store calls that failed (the candidate retries; errors are never
    delivered through a blocking channel).
  * Leader changes (`watch/4`), for anyone: `{:synod_election_leader,
    election, before, after}` with `%{leader: candidate_id | nil, token:
    token | nil, record: record | nil}`; the first message has `before =
    nil`.

  ## Errors

  A store that does not run is `{:error, {:unknown_store, store}}` at once
  (`candidate/4`, `leader/3`, `get/3`). Bad arguments raise `ArgumentError`
  naming the argument or option.
  """

  use GenServer
  require Logger
  alias Synod.Coord.{LeaseKeeper, Options, Stores}
  alias Synod.Election.Candidate
  alias Synod.Store

  @enforce_keys [:pid, :deadline, :election, :id]
  defstruct [:pid, :deadline, :election, :id]

  @typedoc "A candidate: its process and the atomic that holds its leadership deadline."
  @type t :: %__MODULE__{
          pid: pid(),
          deadline: :atomics.atomics_ref(),
          election: election(),
          id: binary()
        }
  @type election :: atom() | binary()
  @type claim :: %{election: election(), candidate_id: binary(), token: pos_integer()}
  @type handler :: (claim() -> any()) | {module(), atom(), list()}
  @typedoc """
  The stored election record: the election, its leader's candidate id,
  when the leadership began (wall-clock ms on the winner's node) and the
  seat's `create_revision` (the leadership's fencing token).
  """
  @type record :: %{
          name: election(),
          leader_id: binary(),
          created_at: integer(),
          revision: pos_integer()
        }

  @no_deadline -0x8000000000000000
  @root "synod/election/"
  @default_ttl 5_000

  @handler {:custom, &__MODULE__.handler?/1, "a 1-argument function or {m, f, a}"}
  @candidate_schema [
    ttl: [type: {:ms, 30}, default: @default_ttl],
    call_timeout: [type: :pos_integer],
    handlers: [type: {:list, @handler}, default: []],
    subscriber: [type: {:nil_or, :pid}, default: nil],
    start: [type: :boolean, default: false],
    root: [type: {:binary, 1024}, default: @root]
  ]
  @read_schema [
    timeout: [type: :pos_integer, default: 5_000],
    call_timeout: [type: :pos_integer, default: 5_000],
    root: [type: {:binary, 1024}, default: @root]
  ]

  # -- API ----------------------------------------------------------------------

  @doc """
  Creates a candidate (a process linked to the caller), not yet started.

  Options: `ttl:` (ms, default #{@default_ttl}, >= 30), `handlers:` (claim
  handlers), `subscriber:` (a pid to subscribe at once), `start:` (`true`
  to start at once; default `false`), `call_timeout:` (each store round
  trip, ms; default `ttl`, at most 5000), `root:` (the key root of the
  election's seat, default `"#{@root}"`).
  """
  @spec candidate(Store.store(), election(), binary(), keyword()) :: {:ok, t()} | {:error, term()}
  def candidate(store, election, candidate_id, opts \\ []) do
    args = init_args!(store, election, candidate_id, opts)

    with :ok <- Stores.check(store),
         {:ok, pid} <- GenServer.start_link(__MODULE__, args) do
      {:ok, handle(pid)}
    end
  end

  @doc """
  A child spec: `{Synod.Election, store: s, election: e, id: id, ttl: ...}`
  (options as `candidate/4`, plus `name:`). A supervised candidate starts
  campaigning at once unless `start: false`; `handle/1` gives its handle.
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    {own, rest} = Keyword.split(opts, [:store, :election, :id, :name])
    args = init_args!(own[:store], own[:election], own[:id], Keyword.put_new(rest, :start, true))

    start =
      case own[:name] do
        nil -> {GenServer, :start_link, [__MODULE__, args]}
        name -> {GenServer, :start_link, [__MODULE__, args, [name: name]]}
      end

    %{id: {__MODULE__, own[:election], own[:id]}, start: start}
  end

  @doc "The handle of a candidate process (a pid or registered name)."
  @spec handle(GenServer.server()) :: t()
  def handle(server), do: GenServer.call(server, :handle)

  @doc """
  Starts campaigning and returns after the first claim attempt:
  `{:ok, :leader}` (the seat was won or adopted), `{:ok, :follower}` (the
  seat is held: the candidate waits for it to empty), or `{:error,
  reason}` (the store did not answer; the candidate keeps campaigning and
  retries). Idempotent: on a started candidate it answers its role now.

  Options: `timeout:` how long to wait for the answer (ms, default 30000;
  past it `{:error, :timeout}`, and the candidate goes on campaigning).
  """
  @spec start(t(), keyword()) :: {:ok, :leader | :follower} | {:error, term()}
  def start(%__MODULE__{pid: pid}, opts \\ []) do
    opts = Options.validate!(opts, timeout: [type: :pos_integer, default: 30_000])
    GenServer.call(pid, :start, opts.timeout)
  catch
    :exit, {:timeout, _} -> {:error, :timeout}
  end

  @doc """
  Stops campaigning (idempotent). If the candidate holds the seat, its
  `leader?/1` turns false first and its handlers are ended, then the seat
  is deleted (only if its `mod_revision` is still this leadership's) and
  the lease revoked. Returns once that was attempted (failures are
  reported to subscribers; the lease then expires within `ttl`). The
  process stays and may be started again.
  """
  @spec stop(t(), timeout()) :: :ok
  def stop(%__MODULE__{pid: pid}, timeout \\ 15_000), do: GenServer.call(pid, :stop, timeout)

  @doc "Stops campaigning and ends the candidate process."
  @spec close(t()) :: :ok
  def close(%__MODULE__{pid: pid} = c) do
    :ok = stop(c)
    GenServer.stop(pid)
  end

  @doc """
  Whether this candidate leads now: it holds the seat and its local deadline
  (last confirmed renewal's send time + `ttl`) has not passed. Never blocks
  on the candidate process or the store. On another node than the
  candidate's it is asked on the candidate's node.
  """
  @spec leader?(t()) :: boolean()
  def leader?(%__MODULE__{pid: pid, deadline: ref}) when node(pid) == node() do
    System.monotonic_time(:millisecond) < :atomics.get(ref, 1) and Process.alive?(pid)
  rescue
    # The atomic went with the candidate's process.
    ArgumentError -> false
  end

  def leader?(%__MODULE__{pid: pid} = c), do: :erpc.call(node(pid), __MODULE__, :leader?, [c])

  @doc """
  Until when this candidate leads, as a `System.monotonic_time(:millisecond)`
  of its node (`leader?/1` is `now < leader_until`), or `nil` when it does
  not lead. Work that must finish while leading can be bounded by it.
  """
  @spec leader_until(t()) :: integer() | nil
  def leader_until(%__MODULE__{pid: pid, deadline: ref}) when node(pid) == node() do
    case :atomics.get(ref, 1) do
      @no_deadline -> nil
      deadline -> if Process.alive?(pid), do: deadline
    end
  rescue
    ArgumentError -> nil
  end

  def leader_until(%__MODULE__{pid: pid} = c),
    do: :erpc.call(node(pid), __MODULE__, :leader_until, [c])

  @doc """
  The candidate id holding `election`'s seat, or `nil` (linearizable read).
  Options: `timeout:` (ms, default 5000), `call_timeout:` (ms, default
  5000; one round trip, bounded by both), `root:`.
  """
  @spec leader(Store.store(), election(), keyword()) :: {:ok, binary() | nil} | {:error, term()}
  def leader(store, election, opts \\ []) do
    with {:ok, record} <- get(store, election, opts), do: {:ok, record && record.leader_id}
  end

  @doc """
  The stored election record of `election` (`t:record/0`), or `nil` when
  its seat is empty (linearizable read). Options as `leader/3`.
  """
  @spec get(Store.store(), election(), keyword()) :: {:ok, record() | nil} | {:error, term()}
  def get(store, election, opts \\ []) do
    Options.check!(store, :store, :atom)
    opts = Options.validate!(opts, @read_schema)
    key = key(election, opts.root)

    with :ok <- Stores.check(store),
         {:ok, kv} <- Store.get(store, key, timeout: min(opts.timeout, opts.call_timeout)) do
      {:ok, record(election, kv)}
    end
  end

  @doc false
  # The record a seat's key-value holds (nil for an empty seat).
  @spec record(election(), Store.kv() | nil) :: record() | nil
  def record(_election, nil), do: nil

  def record(election, kv) do
    {id, at} =
      case decode_seat(kv.value) do
        %{leader_id: id, created_at: at} -> {id, at}
        # Not written by a candidate: the raw bytes, no start time.
        _ -> {kv.value, nil}
      end

    %{name: election, leader_id: id, created_at: at, revision: kv.create_revision}
  end

  defp decode_seat(bytes) do
    :erlang.binary_to_term(bytes, [:safe])
  rescue
    ArgumentError -> nil
  end

  @doc "Adds claim handlers (see the module doc)."
  @spec add_handlers(t(), [handler()]) :: :ok
  def add_handlers(%__MODULE__{pid: pid}, handlers) do
    Options.check!(handlers, :handlers, {:list, @handler})
    GenServer.call(pid, {:add_handlers, handlers})
  end

  @doc "Sends this candidate's events to `pid` (until `pid` exits)."
  @spec subscribe(t(), pid()) :: :ok
  def subscribe(%__MODULE__{pid: pid}, subscriber \\ self()) do
    Options.check!(subscriber, :subscriber, :pid)
    GenServer.call(pid, {:subscribe, subscriber})
  end

  @doc """
  Watches `election`'s leader: `target` receives `{:synod_election_leader,
  election, before, after}` on every change of holder or token (first
  message: the current holder, `before = nil`), each a map `%{leader:,
  token:, record:}`. Returns the watching process, which ends with
  `target` or with `unwatch/1`. Options: `root:`.
  """
  @spec watch(Store.store(), election(), pid(), keyword()) :: {:ok, pid()} | {:error, term()}
  def watch(store, election, target \\ self(), opts \\ []) do
    Options.check!(store, :store, :atom)
    Options.check!(target, :target, :pid)
    opts = Options.validate!(opts, root: [type: {:binary, 1024}, default: @root])
    key = key(election, opts.root)

    with :ok <- Stores.check(store),
         do: Synod.Election.Watcher.start(store, election, key, target)
  end

  @doc "Ends a watch started by `watch/4`."
  @spec unwatch(pid()) :: :ok
  def unwatch(watcher), do: Synod.Election.Watcher.stop(watcher)

  @doc "The store key of an election's seat under `root` (default `\"#{@root}\"`)."
  @spec key(election(), binary()) :: binary()
  def key(election, root \\ @root)
  def key(election, root) when is_atom(election), do: root <> Atom.to_string(election)

  def key(election, root) when is_binary(election) and byte_size(election) in 1..3_000,
    do: root <> election

  def key(other, _root),
    do:
      raise(
        ArgumentError,
        "invalid argument election: expected an atom or a binary of 1..3000 bytes, got: " <>
          inspect(other)
      )

  @doc false
  def handler?(fun) when is_function(fun, 1), do: true
  def handler?({m, f, a}), do: is_atom(m) and is_atom(f) and is_list(a)
  def handler?(_), do: false

  # -- the candidate process: feeds Candidate events, carries out its effects -------

  @impl true
  def init(args) do
    case Stores.check(args.store) do
      :ok ->
        deadline = :atomics.new(1, signed: true)
        :atomics.put(deadline, 1, @no_deadline)

        state =
          Map.merge(args, %{
            machine: Candidate.new(args.ttl),
            deadline: deadline,
            tasks: %{},
            watch: nil,
            subscribers: %{},
            running_handlers: %{}
          })

        state = start_keeper(state)

        state = if args.subscriber, do: add_subscriber(state, args.subscriber), else: state
        {:ok, if(args.start, do: step(state, {:start, nil}), else: state)}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  @impl true
  def handle_call(:handle, _from, state),
    do:
      {:reply,
       %__MODULE__{pid: self(), deadline: state.deadline, election: state.election, id: state.id},
       state}

  def handle_call(:start, from, state), do: {:noreply, step(state, {:start, from})}
  def handle_call(:stop, from, state), do: {:noreply, step(state, {:stop, from})}

  def handle_call({:add_handlers, handlers}, _from, state),
    do: {:reply, :ok, %{state | handlers: state.handlers ++ handlers}}

  def handle_call({:subscribe, pid}, _from, state), do: {:reply, :ok, add_subscriber(state, pid)}
  def handle_call(_unknown, _from, state), do: {:reply, {:error, :unknown_call}, state}

  @impl true
  def handle_cast(_unknown, state), do: {:noreply, state}

  @impl true
  # The lease keeper's reports. It asks before each renewal (pace: :owner),
  # so a candidate that is suspended or stuck renews nothing.
  def handle_info({:synod_lease, keeper, event}, %{keeper: keeper} = state) do
    case event do
      :tick ->
        LeaseKeeper.renew(keeper)
        {:noreply, state}

      {:renewed, lease, sent} ->
        {:noreply, step(state, {:renewed, lease, sent})}

      {:lost, lease} ->
        {:noreply, step(state, {:lease_lost, lease})}

      {:error, lease, reason} ->
        {:noreply, step(state, {:renew_error, lease, reason})}

      _ ->
        {:noreply, state}
    end
  end

  # The keeper went away (it never should): a new one, and the lease counts
  # as lost (a claim finds and adopts the seat if the lease still lives).
  def handle_info({:DOWN, ref, :process, _, _}, %{keeper_ref: ref} = state) do
    lease = state.machine.lease
    state = start_keeper(state)
    {:noreply, if(lease, do: step(state, {:lease_lost, lease}), else: state)}
  end

  def handle_info(event, state) when event in [:deadline, :retry],
    do: {:noreply, step(state, event)}

  # A finished store operation (a Task's reply).
  def handle_info({ref, result}, %{tasks: tasks} = state) when is_map_key(tasks, ref) do
    Process.demonitor(ref, [:flush])
    {kind, tasks} = Map.pop(tasks, ref)
    {:noreply, step(%{state | tasks: tasks}, done(kind, result))}
  end

  def handle_info({:synod_watch, ref, events}, %{watch: ref} = state) when is_list(events),
    do: {:noreply, step(state, {:seat_events, events})}

  def handle_info({:synod_watch, ref, {:error, _}}, %{watch: ref} = state),
    do: {:noreply, step(%{state | watch: nil}, {:seat_watch_ended, :compacted})}

  def handle_info({:DOWN, ref, :process, _, reason}, state) do
    cond do
      Map.has_key?(state.tasks, ref) ->
        {kind, tasks} = Map.pop(state.tasks, ref)
        {:noreply, step(%{state | tasks: tasks}, crashed(kind, reason))}

      ref == state.watch ->
        {:noreply, step(%{state | watch: nil}, {:seat_watch_ended, :down})}

      Map.has_key?(state.subscribers, ref) ->
        {:noreply, %{state | subscribers: Map.delete(state.subscribers, ref)}}

      Map.has_key?(state.running_handlers, ref) ->
        {:noreply, %{state | running_handlers: Map.delete(state.running_handlers, ref)}}

      true ->
        {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    :atomics.put(state.deadline, 1, @no_deadline)
    :ok
  end

  defp done(:claim, result), do: {:claim_done, result}
  defp done(:release, result), do: {:release_done, result}

  defp crashed(:claim, reason), do: {:claim_failed, {:crashed, reason}}
  defp crashed(:release, reason), do: {:release_done, {:error, {:crashed, reason}}}

  # The candidate's lease keeper: its lease outlives a killed candidate
  # (on_owner_exit: :expire: leadership ends at the TTL, and a candidate
  # restarted with the same id adopts the seat), and it renews only when
  # this process answers (pace: :owner).
  defp start_keeper(state) do
    {:ok, keeper} =
      LeaseKeeper.start(state.store, state.ttl,
        on_owner_exit: :expire,
        pace: :owner,
        notify: true,
        call_timeout: state.call_timeout
      )

    Map.merge(state, %{keeper: keeper, keeper_ref: Process.monitor(keeper)})
  end

  defp step(state, event) do
    {machine, effects} = Candidate.step(state.machine, event, now())
    Enum.reduce(effects, %{state | machine: machine}, &effect/2)
  end

  defp effect({:claim, lease}, state) do
    %{store: store, key: key, id: id, keeper: keeper, call_timeout: timeout} = state
    run(state, :claim, fn -> claim_op(store, key, id, keeper, lease, timeout) end)
  end

  defp effect({:release, seat, lease}, state) do
    %{store: store, key: key, keeper: keeper, call_timeout: timeout} = state

    run(state, :release, fn ->
      with {:ok, _, _, _} <- delete_seat(store, key, seat, timeout: timeout),
           :ok <- LeaseKeeper.revoke(keeper, lease, timeout) do
        :ok
      end
    end)
  end

  defp effect({:watch, from}, state) do
    case Store.watch(state.store, state.key, from: from, timeout: state.call_timeout) do
      {:ok, ref} -> step(%{state | watch: ref}, {:watch_started, from})
      {:error, reason} -> step(state, {:watch_failed, reason})
    end
  end

  defp effect(:unwatch, %{watch: nil} = state), do: state

  defp effect(:unwatch, state) do
    Synod.Coord.Watch.stop(state.store, state.watch)
    %{state | watch: nil}
  end

  defp effect(:read_seat, state),
    do: step(state, {:seat_read, Store.get(state.store, state.key, timeout: state.call_timeout)})

  defp effect({:set_deadline, deadline}, state) do
    :atomics.put(state.deadline, 1, deadline || @no_deadline)
    state
  end

  defp effect({:arm, deadline}, state) do
    Process.send_after(self(), :deadline, max(deadline - now(), 0) + 1)
    state
  end

  defp effect({:retry_after, ms}, state) do
    Process.send_after(self(), :retry, ms)
    state
  end

  defp effect({:notify, event}, state) do
    msg = {:synod_election, state.election, state.id, event}
    for {_ref, pid} <- state.subscribers, do: send(pid, msg)
    leader_event(state, event)
    state
  end

  defp effect({:run_handlers, token}, state) do
    claim = %{election: state.election, candidate_id: state.id, token: token}

    Enum.reduce(state.handlers, state, fn handler, st ->
      {pid, ref} = spawn_monitor(fn -> run_handler(handler, claim) end)
      put_in(st.running_handlers[ref], {pid, token})
    end)
  end

  defp effect({:end_handlers, token, reason}, state) do
    for {_ref, {pid, ^token}} <- state.running_handlers,
        do: Process.exit(pid, {:shutdown, {:leadership_ended, token, reason}})

    state
  end

  defp effect({:reply, from, answer}, state) do
    GenServer.reply(from, answer)
    state
  end

  # [:synod, :election, :leader], as this candidate sees its own changes:
  # it became the leader (previous: nil, it cannot know who was), or it
  # stopped being the leader (leader: nil).
  defp leader_event(state, {:elected, _token}), do: emit_leader(state, state.id, nil)
  defp leader_event(state, {:deposed, _token, _reason}), do: emit_leader(state, nil, state.id)
  defp leader_event(_state, _event), do: :ok

  defp emit_leader(state, leader, previous) do
    Synod.Telemetry.execute([:synod, :election, :leader], %{}, %{
      store: state.store,
      election: state.election,
      leader: leader,
      previous: previous
    })
  end

  defp run(state, kind, fun) do
    task = Task.async(fun)
    %{state | tasks: Map.put(state.tasks, task.ref, kind)}
  end

  defp run_handler(handler, claim) do
    case handler do
      {m, f, a} -> apply(m, f, [claim | a])
      fun -> fun.(claim)
    end
  rescue
    e ->
      Logger.error(
        "election claim handler failed: " <> Exception.format(:error, e, __STACKTRACE__)
      )
  end

  # -- store operations (run in tasks) -----------------------------------------------

  # The claim transaction, with the keeper's lease (granted first if
  # needed). Returns {lease, renewed_at | nil, outcome}.
  @doc false
  def claim_op(store, key, id, keeper, known, timeout) do
    opts = [timeout: timeout]

    with {:ok, lease, sent} <- keeper_lease(keeper, known, timeout) do
      seat =
        :erlang.term_to_binary(%{leader_id: id, created_at: System.system_time(:millisecond)})

      case Store.txn(
             store,
             [{:absent, key}],
             [{:put, key, seat, lease: lease}],
             [{:range, key}],
             opts
           ) do
        {:ok, rev, true, _} ->
          {lease, sent, {:won, %{token: rev, mod: rev}, rev}}

        {:ok, rev, false, [{:range, [kv], _, _}]} ->
          if holder_id(kv) == id,
            do: {lease, sent, adopt(keeper, kv, rev, timeout)},
            else: {lease, sent, {:occupied, rev}}

        {:ok, rev, false, [{:range, [], _, _}]} ->
          {lease, sent, {:occupied, rev}}

        {:error, :lease_not_found} ->
          LeaseKeeper.forget(keeper, lease)
          {nil, nil, {:error, :lease_not_found}}

        {:error, reason} ->
          {lease, sent, {:error, reason}}
      end
    else
      {:error, reason} -> {known, nil, {:error, reason}}
    end
  end

  defp holder_id(kv), do: record(nil, kv).leader_id

  # The keeper's lease: `sent` is the grant's send time for a new one; a
  # lease the machine did not know yet is confirmed by a renewal first, so
  # the machine always learns when a lease of its was last confirmed.
  defp keeper_lease(keeper, known, timeout) do
    case LeaseKeeper.lease(keeper, timeout) do
      {:ok, lease, nil} when lease != known ->
        with {:ok, sent} <- LeaseKeeper.adopt(keeper, lease, timeout), do: {:ok, lease, sent}

      other ->
        other
    end
  end

  # The seat holds our own id: adopt it and its lease once a renewal of that
  # lease is confirmed (the keeper keeps it from then on, and revokes the
  # lease it had).
  defp adopt(keeper, kv, rev, timeout) do
    case LeaseKeeper.adopt(keeper, kv.lease, timeout) do
      {:ok, sent} ->
        {:adopted, %{token: kv.create_revision, mod: kv.mod_revision}, kv.lease, sent, rev}

      {:error, :lease_not_found} ->
        {:occupied, rev}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp delete_seat(_store, _key, nil, _opts), do: {:ok, 0, false, []}

  defp delete_seat(store, key, seat, opts),
    do: Store.txn(store, [{:mod_revision, key, :==, seat.mod}], [{:delete, key}], [], opts)

  # -- subscribers and options ---------------------------------------------------------

  defp add_subscriber(state, pid) do
    if pid in Map.values(state.subscribers),
      do: state,
      else: %{state | subscribers: Map.put(state.subscribers, Process.monitor(pid), pid)}
  end

  defp now, do: System.monotonic_time(:millisecond)

  defp init_args!(store, election, id, opts) do
    Options.check!(store, :store, :atom)
    Options.check!(id, :candidate_id, {:binary, 1_000_000})
    opts = Options.validate!(opts, @candidate_schema)

    %{
      store: store,
      election: election,
      key: key(election, opts.root),
      id: id,
      ttl: opts.ttl,
      call_timeout: Map.get_lazy(opts, :call_timeout, fn -> min(opts.ttl, 5_000) end),
      handlers: opts.handlers,
      subscriber: opts.subscriber,
      start: opts.start
    }
  end
end
