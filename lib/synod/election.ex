defmodule Synod.Election do
  @moduledoc """
  Leader election among TTL candidates, on a `Synod.Store`.

  A candidate is a process with a unique candidate id in a named election.
  Once started it claims the election's seat (the key
  `synod/election/<election>`) with a lease of `ttl` ms, renews the lease
  every `ttl / 3`, and claims again whenever the seat empties — learned from
  a watch on the seat, never by polling.

      {:ok, c} = Synod.Election.candidate(:cfg, :scheduler, "node-a", ttl: 3_000,
                   handlers: [fn claim -> IO.inspect(claim.token, label: "leading") end])
      :ok = Synod.Election.subscribe(c)        # {:synod_election, ...} messages
      :ok = Synod.Election.start(c)
      Synod.Election.leader?(c)                # true while this candidate leads
      {:ok, "node-a"} = Synod.Election.leader(:cfg, :scheduler)
      :ok = Synod.Election.stop(c)             # releases the seat if held

  ## Claims

  A claim is one transaction: *if the seat is absent, put it with my
  candidate id and my lease* — else read it. Claims compare on existence
  and the release on `mod_revision`, never on `version`, so a seat deleted
  and re-created (version 1 again) is never mistaken for the old one (no
  ABA). The **fencing token** of a leadership is the seat's
  `create_revision`: it grows with every new leadership of the election.

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
  reports `{:deposed, token, :deadline}` and claims again (finding its own
  seat if the lease survived: same token, handlers run again).

  ## Notifications

  * Claim handlers (`handlers:` or `add_handlers/2`): 1-argument functions
    or `{module, function, args}` called with `%{election:, candidate_id:,
    token:}` on every transition into leadership, each in a process of its
    own (a handler that raises is logged). Handlers added while leading run
    from the next transition on.
  * Subscribers (`subscribe/2`) get `{:synod_election, election,
    candidate_id, event}`: `{:elected, token}`, `{:deposed, token, reason}`
    (`:stopped`, `:deadline`, `:lease_lost`, `:seat_lost`), and
    `{:error, reason}` for store calls that failed (the candidate retries;
    errors are never delivered through a blocking channel).
  * Leader changes (`watch/3`), for anyone: `{:synod_election_leader,
    election, before, after}` with `%{leader: candidate_id | nil, token:
    token | nil}`; the first message has `before = nil`.
  """

  use GenServer
  require Logger
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

  @no_deadline -0x8000000000000000
  @prefix "synod/election/"

  # -- API ----------------------------------------------------------------------

  @doc """
  Creates a candidate (a process linked to the caller), not yet started.

  Options: `ttl:` (ms, default 5000, >= 30), `handlers:` (claim handlers),
  `subscriber:` (a pid to subscribe at once), `start:` (`true` to start at
  once; default `false`), `call_timeout:` (each store call, ms; default
  `ttl`, at most 5000).
  """
  @spec candidate(Store.store(), election(), binary(), keyword()) :: {:ok, t()} | {:error, term()}
  def candidate(store, election, candidate_id, opts \\ []) do
    args = init_args!(store, election, candidate_id, opts)

    with {:ok, pid} <- GenServer.start_link(__MODULE__, args) do
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
    args =
      init_args!(opts[:store], opts[:election], opts[:id], Keyword.put_new(opts, :start, true))

    start =
      case opts[:name] do
        nil -> {GenServer, :start_link, [__MODULE__, args]}
        name -> {GenServer, :start_link, [__MODULE__, args, [name: name]]}
      end

    %{id: {__MODULE__, opts[:election], opts[:id]}, start: start}
  end

  @doc "The handle of a candidate process (a pid or registered name)."
  @spec handle(GenServer.server()) :: t()
  def handle(server), do: GenServer.call(server, :handle)

  @doc "Starts campaigning (idempotent): claims at once, then renews and re-claims."
  @spec start(t()) :: :ok
  def start(%__MODULE__{pid: pid}), do: GenServer.call(pid, :start)

  @doc """
  Stops campaigning (idempotent). If the candidate holds the seat, its
  `leader?/1` turns false first, then the seat is deleted (only if its
  `mod_revision` is still this leadership's) and the lease revoked. Returns
  once that was attempted (failures are reported to subscribers; the lease
  then expires within `ttl`). The process stays and may be started again.
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

  @doc "The candidate id holding `election`'s seat, or `nil` (linearizable read)."
  @spec leader(Store.store(), election(), keyword()) :: {:ok, binary() | nil} | {:error, term()}
  def leader(store, election, opts \\ []) do
    with {:ok, kv} <- Store.get(store, key(election), Keyword.take(opts, [:timeout])) do
      {:ok, kv && kv.value}
    end
  end

  @doc "Adds claim handlers (see the module doc)."
  @spec add_handlers(t(), [handler()]) :: :ok
  def add_handlers(%__MODULE__{pid: pid}, handlers),
    do: GenServer.call(pid, {:add_handlers, handlers!(handlers)})

  @doc "Sends this candidate's events to `pid` (until `pid` exits)."
  @spec subscribe(t(), pid()) :: :ok
  def subscribe(%__MODULE__{pid: pid}, subscriber \\ self()) when is_pid(subscriber),
    do: GenServer.call(pid, {:subscribe, subscriber})

  @doc """
  Watches `election`'s leader: `target` receives `{:synod_election_leader,
  election, before, after}` on every change of holder or token (first
  message: the current holder, `before = nil`). Returns the watching
  process, which ends with `target` or with `unwatch/1`.
  """
  @spec watch(Store.store(), election(), pid()) :: {:ok, pid()}
  def watch(store, election, target \\ self()) when is_pid(target) do
    _ = key(election)
    Synod.Election.Watcher.start(store, election, target)
  end

  @doc "Ends a watch started by `watch/3`."
  @spec unwatch(pid()) :: :ok
  def unwatch(watcher), do: Synod.Election.Watcher.stop(watcher)

  @doc "The store key of an election's seat."
  @spec key(election()) :: binary()
  def key(election) when is_atom(election), do: @prefix <> Atom.to_string(election)

  def key(election) when is_binary(election) and byte_size(election) in 1..4000,
    do: @prefix <> election

  def key(other),
    do:
      raise(
        ArgumentError,
        "an election is an atom or a binary of 1..4000 bytes, got: #{inspect(other)}"
      )

  # -- the candidate process ------------------------------------------------------

  @impl true
  def init(args) do
    state =
      Map.merge(args, %{
        deadline: :atomics.new(1, signed: true),
        running: false,
        lease: nil,
        renewed_at: nil,
        seat: nil,
        op: nil,
        again: false,
        renew: nil,
        watch: nil,
        stoppers: [],
        subscribers: %{},
        timer: nil
      })

    :atomics.put(state.deadline, 1, @no_deadline)
    Process.send_after(self(), :tick, tick_ms(state))
    state = if args.subscriber, do: add_subscriber(state, args.subscriber), else: state
    {:ok, if(args.start, do: begin(state), else: state)}
  end

  @impl true
  def handle_call(:handle, _from, state),
    do:
      {:reply,
       %__MODULE__{pid: self(), deadline: state.deadline, election: state.election, id: state.id},
       state}

  def handle_call(:start, _from, state), do: {:reply, :ok, begin(state)}

  def handle_call(:stop, from, %{running: false, op: nil} = state) do
    GenServer.reply(from, :ok)
    {:noreply, state}
  end

  def handle_call(:stop, from, state) do
    state = %{state | running: false, stoppers: [from | state.stoppers]}
    {:noreply, if(state.op == nil, do: release(state), else: state)}
  end

  def handle_call({:add_handlers, handlers}, _from, state),
    do: {:reply, :ok, %{state | handlers: state.handlers ++ handlers}}

  def handle_call({:subscribe, pid}, _from, state), do: {:reply, :ok, add_subscriber(state, pid)}

  @impl true
  def handle_info(:tick, state) do
    Process.send_after(self(), :tick, tick_ms(state))
    {:noreply, renew(state)}
  end

  def handle_info({:deadline, ref}, %{timer: ref} = state) do
    if state.seat && System.monotonic_time(:millisecond) >= :atomics.get(state.deadline, 1) do
      {:noreply, state |> lose(:deadline) |> claim()}
    else
      {:noreply, state}
    end
  end

  # A leader whose seat watch could not be set up watches again from its
  # seat's revision; anyone else claims (which reads the seat and watches).
  def handle_info(:retry, %{seat: %{mod: mod}, watch: nil} = state),
    do: {:noreply, watch_seat(state, mod + 1)}

  def handle_info(:retry, state), do: {:noreply, claim(state)}

  # A finished claim or release (Task replies).
  def handle_info({ref, result}, %{op: {ref, kind}} = state) do
    Process.demonitor(ref, [:flush])
    {:noreply, done(kind, result, %{state | op: nil})}
  end

  def handle_info({ref, {lease, sent, result}}, %{renew: ref} = state) do
    Process.demonitor(ref, [:flush])
    {:noreply, renewed(lease, sent, result, %{state | renew: nil})}
  end

  def handle_info({:synod_watch, ref, events}, %{watch: {ref, _}} = state),
    do: {:noreply, seat_events(events, state)}

  def handle_info({:DOWN, ref, :process, _, reason}, state) do
    cond do
      match?({^ref, _}, state.op) ->
        {_, kind} = state.op
        {:noreply, done(kind, {:error, {:crashed, reason}}, %{state | op: nil})}

      ref == state.renew ->
        {:noreply, %{state | renew: nil}}

      match?({^ref, _}, state.watch) ->
        {_, last} = state.watch
        {:noreply, rewatch(%{state | watch: nil}, last + 1)}

      Map.has_key?(state.subscribers, ref) ->
        {:noreply, %{state | subscribers: Map.delete(state.subscribers, ref)}}

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

  # -- claiming ---------------------------------------------------------------------

  defp begin(%{running: true} = state), do: state
  defp begin(state), do: claim(%{state | running: true})

  # Runs one claim unless the candidate is stopped or holds the seat. With a
  # claim or release under way, one more claim follows it (its answer may
  # predate the change that called for this one).
  defp claim(%{running: true, op: nil, seat: nil} = state) do
    %{store: store, key: key, id: id, ttl: ttl, lease: lease, call_timeout: timeout} = state
    task = Task.async(fn -> claim_op(store, key, id, ttl, lease, timeout) end)
    %{state | op: {task.ref, :claim}, again: false}
  end

  defp claim(%{running: true, seat: nil} = state), do: %{state | again: true}
  defp claim(state), do: state

  # In a task: the claim transaction, with a lease granted first if needed.
  # Returns {lease, renewed_at | nil, outcome}.
  @doc false
  def claim_op(store, key, id, ttl, lease, timeout) do
    opts = [timeout: timeout]

    with {:ok, lease, sent} <- ensure_lease(store, ttl, lease, opts) do
      case Store.txn(
             store,
             [{:absent, key}],
             [{:put, key, id, lease: lease}],
             [{:range, key}],
             opts
           ) do
        {:ok, rev, true, _} ->
          {lease, sent, {:won, %{token: rev, mod: rev}, rev}}

        {:ok, rev, false, [{:range, [%{value: ^id} = kv], _, _}]} ->
          {lease, sent, adopt(store, kv, lease, rev, opts)}

        {:ok, rev, false, [{:range, kvs, _, _}]} ->
          {lease, sent, {:occupied, List.first(kvs), rev}}

        {:error, :lease_not_found} ->
          {nil, nil, {:error, :lease_not_found}}

        {:error, reason} ->
          {lease, sent, {:error, reason}}
      end
    else
      {:error, reason} -> {lease, nil, {:error, reason}}
    end
  end

  defp ensure_lease(store, ttl, nil, opts) do
    sent = System.monotonic_time(:millisecond)

    with {:ok, lease, _ttl} <- Store.grant(store, ttl, opts), do: {:ok, lease, sent}
  end

  defp ensure_lease(_store, _ttl, lease, _opts), do: {:ok, lease, nil}

  # The seat holds our own id: adopt it and its lease once a renewal of that
  # lease is confirmed; our other lease (if any) is revoked.
  defp adopt(store, kv, lease, rev, opts) do
    sent = System.monotonic_time(:millisecond)

    case Store.keep_alive(store, kv.lease, opts) do
      {:ok, _} ->
        if kv.lease != lease, do: Store.revoke(store, lease, opts)
        {:adopted, %{token: kv.create_revision, mod: kv.mod_revision}, kv.lease, sent, rev}

      {:error, :lease_not_found} ->
        {:occupied, kv, rev}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp done(:claim, {lease, sent, outcome}, state) do
    renewed_at =
      cond do
        lease == nil -> nil
        sent != nil -> sent
        true -> state.renewed_at
      end

    state = %{state | lease: lease, renewed_at: renewed_at}

    state =
      case outcome do
        {:won, seat, rev} ->
          won(state, seat, rev)

        {:adopted, seat, lease, sent, rev} ->
          won(%{state | lease: lease, renewed_at: sent}, seat, rev)

        {:occupied, _kv, rev} ->
          if state.running, do: watch_seat(state, rev + 1), else: state

        {:error, reason} ->
          state |> notify({:error, reason}) |> retry_later()
      end

    cond do
      not state.running and state.op == nil -> release(state)
      state.again -> claim(state)
      true -> state
    end
  end

  defp done(:claim, {:error, reason}, state) do
    state = state |> notify({:error, reason}) |> retry_later()
    if state.running, do: state, else: release(state)
  end

  defp done(:release, result, state) do
    state =
      case result do
        {:error, reason} -> notify(state, {:error, {:release, reason}})
        _ -> state
      end

    for from <- state.stoppers, do: GenServer.reply(from, :ok)
    state = %{state | stoppers: [], lease: nil, renewed_at: nil}
    if state.running, do: claim(state), else: state
  end

  # A claim won or adopted. If the candidate was stopped meanwhile, the seat
  # is released (by the caller). If the lease's last confirmed renewal is
  # already too old, leadership is not announced: the next claim adopts the
  # seat after a fresh renewal.
  defp won(state, seat, rev) do
    state = %{state | seat: seat}
    deadline = state.renewed_at + state.ttl

    cond do
      not state.running ->
        state

      deadline <= System.monotonic_time(:millisecond) ->
        claim(%{state | seat: nil})

      true ->
        :atomics.put(state.deadline, 1, deadline)
        state = state |> arm(deadline) |> watch_seat(rev + 1)
        run_handlers(state, seat.token)
        notify(state, {:elected, seat.token})
    end
  end

  defp retry_later(state) do
    Process.send_after(self(), :retry, tick_ms(state))
    state
  end

  # -- renewing ---------------------------------------------------------------------

  defp renew(%{lease: lease, renew: nil} = state) when lease != nil do
    %{store: store, call_timeout: timeout} = state

    task =
      Task.async(fn ->
        sent = System.monotonic_time(:millisecond)
        {lease, sent, Store.keep_alive(store, lease, timeout: timeout)}
      end)

    %{state | renew: task.ref}
  end

  defp renew(state), do: state

  defp renewed(lease, sent, {:ok, _}, %{lease: lease} = state) do
    state = %{state | renewed_at: max(state.renewed_at || sent, sent)}

    if state.seat do
      deadline = state.renewed_at + state.ttl
      :atomics.put(state.deadline, 1, deadline)
      arm(state, deadline)
    else
      state
    end
  end

  defp renewed(lease, _sent, {:error, :lease_not_found}, %{lease: lease} = state) do
    state = %{state | lease: nil, renewed_at: nil}
    if state.seat, do: state |> lose(:lease_lost) |> claim(), else: state
  end

  defp renewed(lease, _sent, {:error, reason}, %{lease: lease} = state),
    do: notify(state, {:error, reason})

  # A renewal of a lease we no longer use.
  defp renewed(_lease, _sent, _result, state), do: state

  defp arm(state, deadline) do
    ref = make_ref()

    Process.send_after(
      self(),
      {:deadline, ref},
      max(deadline - System.monotonic_time(:millisecond), 0) + 1
    )

    %{state | timer: ref}
  end

  # -- losing and releasing -----------------------------------------------------------

  defp lose(%{seat: nil} = state, _reason), do: state

  defp lose(state, reason) do
    :atomics.put(state.deadline, 1, @no_deadline)
    notify(%{state | seat: nil, timer: nil}, {:deposed, state.seat.token, reason})
  end

  # Leadership ends locally before anything is sent; then the seat is deleted
  # if it is still ours and the lease revoked.
  defp release(state) do
    seat = state.seat
    state = state |> lose(:stopped) |> unwatch_seat()
    %{store: store, key: key, lease: lease, call_timeout: timeout} = state

    task =
      Task.async(fn ->
        opts = [timeout: timeout]

        with {:ok, _, _, _} <- delete_seat(store, key, seat, opts),
             {:ok, _} <- revoke(store, lease, opts) do
          :ok
        end
      end)

    %{state | op: {task.ref, :release}}
  end

  defp delete_seat(_store, _key, nil, _opts), do: {:ok, 0, false, []}

  defp delete_seat(store, key, seat, opts),
    do: Store.txn(store, [{:mod_revision, key, :==, seat.mod}], [{:delete, key}], [], opts)

  defp revoke(_store, nil, _opts), do: {:ok, 0}

  defp revoke(store, lease, opts) do
    case Store.revoke(store, lease, opts) do
      {:error, :lease_not_found} -> {:ok, 0}
      other -> other
    end
  end

  # -- watching the seat --------------------------------------------------------------

  defp watch_seat(%{watch: {_, _}} = state, _from), do: state
  defp watch_seat(state, from), do: rewatch(state, from)

  defp rewatch(state, from) do
    case Store.watch(state.store, state.key, from: from, timeout: state.call_timeout) do
      {:ok, ref} ->
        %{state | watch: {ref, from - 1}}

      {:error, reason} ->
        # Without a watch the seat's changes go unseen: claim again later,
        # which reads the seat and watches again.
        state |> notify({:error, {:watch, reason}}) |> retry_later()
    end
  end

  defp unwatch_seat(%{watch: nil} = state), do: state

  defp unwatch_seat(%{watch: {ref, _}} = state) do
    Store.unwatch(state.store, ref)
    %{state | watch: nil}
  end

  defp seat_events({:error, _}, state) do
    # History compacted past our position: re-read through a claim.
    state = %{state | watch: nil}
    if state.seat, do: rewatch_after_compaction(state), else: claim(state)
  end

  defp seat_events(events, %{watch: {ref, _}} = state) do
    last = events |> List.last() |> elem(1)
    state = %{state | watch: {ref, last}}

    # Events at or before our own seat's last change are history we knew
    # when we took it (a watch set up while waiting may deliver them late).
    Enum.reduce(events, state, fn
      {_, rev, _kv, _prev}, %{seat: %{mod: mod}} = st when rev <= mod ->
        st

      {:delete, _rev, _kv, _prev}, st ->
        st |> lose(:seat_lost) |> claim()

      {:put, _rev, kv, _prev}, %{seat: %{token: token}} = st when kv.create_revision != token ->
        lose(st, :seat_lost)

      _, st ->
        st
    end)
  end

  # The leader cannot know whether the seat changed in the compacted
  # history: it reads the seat, and stays leader only if it is unchanged.
  defp rewatch_after_compaction(state) do
    case Store.get(state.store, state.key, timeout: state.call_timeout) do
      {:ok, %{create_revision: token, mod_revision: rev}} when token == state.seat.token ->
        watch_seat(state, rev + 1)

      {:ok, _} ->
        state |> lose(:seat_lost) |> claim()

      {:error, reason} ->
        state |> notify({:error, reason}) |> lose(:seat_lost) |> claim()
    end
  end

  # -- handlers and subscribers --------------------------------------------------------

  defp run_handlers(state, token) do
    claim = %{election: state.election, candidate_id: state.id, token: token}

    for handler <- state.handlers do
      spawn(fn ->
        try do
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
      end)
    end

    :ok
  end

  defp notify(state, event) do
    msg = {:synod_election, state.election, state.id, event}
    for {_ref, pid} <- state.subscribers, do: send(pid, msg)
    state
  end

  defp add_subscriber(state, pid) do
    if pid in Map.values(state.subscribers),
      do: state,
      else: %{state | subscribers: Map.put(state.subscribers, Process.monitor(pid), pid)}
  end

  defp tick_ms(state), do: max(div(state.ttl, 3), 10)

  # -- options ------------------------------------------------------------------------------

  defp init_args!(store, election, id, opts) do
    unless is_atom(store) and store != nil,
      do: raise(ArgumentError, "store must be a store name (an atom), got: #{inspect(store)}")

    key = key(election)

    unless is_binary(id) and byte_size(id) in 1..1_000_000,
      do:
        raise(
          ArgumentError,
          "a candidate id must be a non-empty binary, got: #{inspect(id, limit: 5)}"
        )

    ttl = Keyword.get(opts, :ttl, 5_000)

    unless is_integer(ttl) and ttl >= 30,
      do: raise(ArgumentError, "ttl must be an integer number of ms >= 30, got: #{inspect(ttl)}")

    subscriber = Keyword.get(opts, :subscriber)

    unless subscriber == nil or is_pid(subscriber),
      do: raise(ArgumentError, "subscriber must be a pid, got: #{inspect(subscriber)}")

    timeout = Keyword.get(opts, :call_timeout, min(ttl, 5_000))

    unless is_integer(timeout) and timeout > 0,
      do:
        raise(ArgumentError, "call_timeout must be a positive integer, got: #{inspect(timeout)}")

    %{
      store: store,
      election: election,
      key: key,
      id: id,
      ttl: ttl,
      call_timeout: timeout,
      handlers: handlers!(Keyword.get(opts, :handlers, [])),
      subscriber: subscriber,
      start: Keyword.get(opts, :start, false) == true
    }
  end

  defp handlers!(handlers) when is_list(handlers) do
    Enum.each(handlers, fn
      fun when is_function(fun, 1) ->
        :ok

      {m, f, a} when is_atom(m) and is_atom(f) and is_list(a) ->
        :ok

      other ->
        raise ArgumentError,
              "a claim handler is a 1-argument function or {m, f, a}, got: #{inspect(other)}"
    end)

    handlers
  end

  defp handlers!(other),
    do: raise(ArgumentError, "handlers must be a list, got: #{inspect(other)}")
end
