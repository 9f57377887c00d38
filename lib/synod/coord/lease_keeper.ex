defmodule Synod.Coord.LeaseKeeper do
  @moduledoc """
  The one keeper of store leases: a process that grants a lease on first
  use, renews it every `ttl/3`, revokes it when its owner dies, and reports
  its loss once. Lock, Election and Tasks.Worker all hold their leases
  through it; nothing else on the store renews a lease.

  ## Two ways to use it

  **Shared, for code that runs the caller's functions** (`Synod.Lock`):
  `checkout/3` gives the calling process its keeper for a store and TTL
  (started on first use, one per owner, store and TTL) and the lease;
  `checkin/1` ends the use. The keeper renews on its own timer, revokes the
  lease at once when the owner dies, and revokes it and exits after
  `ttl * 4` without users. It sends the owner nothing (the owner is the
  caller's process, whose mailbox is not ours): a lease found gone is
  forgotten, and the next `checkout/3` grants a new one. `replace/3` does
  the same at once for a caller that learnt of the loss from the store;
  `discard/1` stops renewing a lease whose keys must go (their fate is
  unknown): they expire with it.

      {:ok, keeper, lease} = Synod.Coord.LeaseKeeper.checkout(store, ttl, 5_000)
      # ... keys put with lease: lease ...
      :ok = Synod.Coord.LeaseKeeper.checkin(keeper)

  **Dedicated, for a process of ours** (`Synod.Election`'s candidate,
  `Synod.Tasks.Worker`'s job): `start/3` starts a keeper for one owner,
  with these modes:

    * `on_owner_exit: :revoke` (default) — the lease is revoked the moment
      the owner dies (a worker's task is free again at once); `:expire` —
      the keeper stops renewing and exits, the lease lives out its TTL.
      A candidate needs `:expire`: its leadership must end at the TTL, not
      when its process dies, so that a candidate restarted with the same id
      within the TTL finds and adopts its own seat (the seed's "a claim
      remains valid for ttl without renewal").
    * `pace: :keeper` (default) — renew on the keeper's own timer;
      `:owner` — every `ttl/3` the keeper asks the owner
      (`{:synod_lease, keeper, :tick}`), and renews only when the owner
      answers with `renew/1`. A suspended or stuck owner then renews
      nothing and loses its lease after the TTL, as it would if the keeper
      ran inside it (a leader that is paused must stop leading; a paused
      worker must lose its task).
    * `notify: true` — the owner receives `{:synod_lease, keeper, event}`:
      `{:renewed, lease, sent_at}` for each confirmed renewal (`sent_at`:
      the `System.monotonic_time(:millisecond)` the renewal was sent at;
      the lease lives at least `ttl` from then), `{:error, lease, reason}`
      for a renewal the store did not answer, and **`{:lost, lease}`
      exactly once per lease** when a renewal finds it gone (expired on
      the store's leader, or revoked by someone else). After a loss the
      keeper holds no lease until `lease/2` grants one.
    * `lease: id` — start with an existing lease (e.g. the task lease a
      reservation granted) instead of granting one on first use.
    * `call_timeout:` — each store round trip (default `ttl / 2`, at
      least 50 ms, at most 5000).

  `lease/2` (grant on first use), `adopt/3` (take over an existing lease
  once a renewal of it is confirmed), `revoke/3`, `forget/2` and `stop/1`
  act on a dedicated keeper's lease.
  """

  use GenServer

  alias Synod.Coord.Options
  alias Synod.Store

  @start_schema [
    owner: [type: :pid],
    on_owner_exit: [type: {:in, [:revoke, :expire]}, default: :revoke],
    pace: [type: {:in, [:keeper, :owner]}, default: :keeper],
    notify: [type: :boolean, default: false],
    lease: [type: {:nil_or, :pos_integer}, default: nil],
    call_timeout: [type: :pos_integer]
  ]

  # -- shared keepers (checkout) ---------------------------------------------------

  @doc """
  The calling process's lease on `store` with `ttl` (ms), granted if needed,
  and its keeper, counted as in use until `checkin/1`. `timeout` bounds the
  grant.
  """
  @spec checkout(atom(), pos_integer(), pos_integer()) ::
          {:ok, pid(), pos_integer()} | {:error, term()}
  def checkout(store, ttl, timeout) do
    slot = {__MODULE__, store, ttl}

    case Process.get(slot) && call(Process.get(slot), {:checkout, timeout}, timeout) do
      {:ok, lease} ->
        {:ok, Process.get(slot), lease}

      {:error, _} = error ->
        error

      _gone ->
        {:ok, pid} = GenServer.start(__MODULE__, {store, ttl, shared_opts()})
        Process.put(slot, pid)

        case call(pid, {:checkout, timeout}, timeout) do
          {:ok, lease} -> {:ok, pid, lease}
          {:error, _} = error -> error
          :noproc -> {:error, :keeper_down}
        end
    end
  end

  defp shared_opts,
    do: %{owner: self(), on_owner_exit: :revoke, pace: :keeper, notify: false, lease: nil}

  @doc "Ends one use of the lease (see `checkout/3`)."
  @spec checkin(pid()) :: :ok
  def checkin(keeper), do: GenServer.cast(keeper, :checkin)

  @doc "`old` was found gone: forget it and grant a new lease."
  @spec replace(pid(), pos_integer(), pos_integer()) :: {:ok, pos_integer()} | {:error, term()}
  def replace(keeper, old, timeout) do
    case call(keeper, {:replace, old, timeout}, timeout) do
      {:ok, lease, _sent} -> {:ok, lease}
      {:error, _} = error -> error
      :noproc -> {:error, :keeper_down}
    end
  end

  @doc "Stops renewing the current lease: it expires within its TTL with its keys."
  @spec discard(pid()) :: :ok
  def discard(keeper), do: GenServer.cast(keeper, :discard)

  # -- dedicated keepers (start) -----------------------------------------------------

  @doc """
  Starts a keeper of a lease of `ttl` ms on `store` for `owner:` (default
  the caller); see the module doc for the options. Not linked: it monitors
  its owner.
  """
  @spec start(atom(), pos_integer(), keyword()) :: {:ok, pid()}
  def start(store, ttl, opts \\ []) do
    Options.check!(store, :store, :atom)
    Options.check!(ttl, :ttl, {:ms, 1})
    opts = Options.validate!(opts, @start_schema)
    opts = Map.put_new(opts, :owner, self())
    GenServer.start(__MODULE__, {store, ttl, opts})
  end

  @doc """
  The keeper's lease, granted now if it has none: `{:ok, lease, sent_at}`
  (`sent_at` the time the grant was sent, or nil for a lease it already
  had) or `{:error, reason}`.
  """
  @spec lease(pid(), pos_integer()) :: {:ok, pos_integer(), integer() | nil} | {:error, term()}
  def lease(keeper, timeout) do
    case call(keeper, {:lease, timeout}, timeout) do
      :noproc -> {:error, :keeper_down}
      other -> other
    end
  end

  @doc """
  Takes over `lease` (granted elsewhere, e.g. by an earlier owner): renews
  it once, and if the store confirms it lives, keeps it from now on and
  revokes the lease it had. `{:ok, sent_at}` or `{:error, reason}`
  (`:lease_not_found` when it is gone).
  """
  @spec adopt(pid(), pos_integer(), pos_integer()) :: {:ok, integer()} | {:error, term()}
  def adopt(keeper, lease, timeout) do
    case call(keeper, {:adopt, lease, timeout}, timeout) do
      :noproc -> {:error, :keeper_down}
      other -> other
    end
  end

  @doc "Revokes `lease` if it is the keeper's (and forgets it): `:ok` or the store's error."
  @spec revoke(pid(), pos_integer() | nil, pos_integer()) :: :ok | {:error, term()}
  def revoke(_keeper, nil, _timeout), do: :ok

  def revoke(keeper, lease, timeout) do
    case call(keeper, {:revoke, lease, timeout}, timeout) do
      :noproc -> {:error, :keeper_down}
      other -> other
    end
  end

  @doc "Forgets `lease` without revoking it (the caller found it gone); no loss is reported."
  @spec forget(pid(), pos_integer()) :: :ok
  def forget(keeper, lease), do: GenServer.cast(keeper, {:forget, lease})

  @doc "The owner's answer to `{:synod_lease, keeper, :tick}` (`pace: :owner`): renew now."
  @spec renew(pid()) :: :ok
  def renew(keeper), do: GenServer.cast(keeper, :renew)

  @doc "Stops the keeper; its lease is left as it is (revoked or expiring: the caller's business)."
  @spec stop(pid()) :: :ok
  def stop(keeper) do
    GenServer.stop(keeper, :normal, 5_000)
  catch
    :exit, _ -> :ok
  end

  @doc """
  Starts one renewal (`Synod.Store.keep_alive/3`) of `lease` in a task
  linked to the caller; the task replies `{lease, sent_at, result}`, where
  `sent_at` is the `System.monotonic_time(:millisecond)` the renewal was
  sent at (a lease confirmed alive lives at least `ttl` from then).
  """
  @spec renew_async(atom(), pos_integer(), pos_integer()) :: Task.t()
  def renew_async(store, lease, timeout) do
    Task.async(fn ->
      sent = now()
      {lease, sent, Store.keep_alive(store, lease, timeout: timeout)}
    end)
  end

  defp call(keeper, request, timeout) do
    GenServer.call(keeper, request, timeout + 1_000)
  catch
    :exit, {:noproc, _} -> :noproc
    :exit, {:normal, _} -> :noproc
    :exit, {:timeout, _} -> {:error, :timeout}
  end

  # -- the keeper process ---------------------------------------------------------

  @impl true
  def init({store, ttl, opts}) do
    state = %{
      store: store,
      ttl: ttl,
      owner_pid: opts.owner,
      owner: Process.monitor(opts.owner),
      on_owner_exit: opts.on_owner_exit,
      pace: opts.pace,
      notify: opts.notify,
      call_timeout: Map.get(opts, :call_timeout, min(max(div(ttl, 2), 50), 5_000)),
      lease: opts.lease,
      in_use: 0,
      renewing: nil,
      asked: false,
      idle: nil
    }

    {:ok, tick(state)}
  end

  @impl true
  def handle_call({:checkout, timeout}, _from, state) do
    case ensure_lease(state, timeout) do
      {:ok, state, _sent} ->
        {:reply, {:ok, state.lease}, %{state | idle: nil, in_use: state.in_use + 1}}

      {:error, _} = error ->
        {:reply, error, state}
    end
  end

  def handle_call({:lease, timeout}, _from, state) do
    case ensure_lease(state, timeout) do
      {:ok, state, sent} -> {:reply, {:ok, state.lease, sent}, state}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call({:replace, old, timeout}, _from, state) do
    state = if state.lease == old, do: %{state | lease: nil}, else: state

    case ensure_lease(state, timeout) do
      {:ok, state, sent} -> {:reply, {:ok, state.lease, sent}, state}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call({:adopt, lease, timeout}, _from, state) do
    sent = now()

    case Store.keep_alive(state.store, lease, timeout: timeout) do
      {:ok, _} ->
        if state.lease != lease, do: revoke_lease(state)
        {:reply, {:ok, sent}, %{state | lease: lease}}

      {:error, _} = error ->
        {:reply, error, state}
    end
  end

  # The keeper's own lease is forgotten whatever the answer (unrevoked, it
  # expires); another lease of the owner's (an old one) is revoked too.
  def handle_call({:revoke, lease, timeout}, _from, state) do
    state = if state.lease == lease, do: %{state | lease: nil}, else: state

    case Store.revoke(state.store, lease, timeout: timeout) do
      {:ok, _} -> {:reply, :ok, state}
      {:error, :lease_not_found} -> {:reply, :ok, state}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call(request, _from, state),
    do: {:reply, {:error, {:bad_request, request}}, state}

  @impl true
  def handle_cast(:checkin, state) do
    state = %{state | in_use: state.in_use - 1}
    {:noreply, if(state.in_use == 0, do: idle(state), else: state)}
  end

  def handle_cast(:discard, state), do: {:noreply, %{state | lease: nil}}

  def handle_cast({:forget, lease}, %{lease: lease} = state),
    do: {:noreply, %{state | lease: nil}}

  def handle_cast({:forget, _other}, state), do: {:noreply, state}

  def handle_cast(:renew, state), do: {:noreply, start_renewal(%{state | asked: false})}
  def handle_cast(_unknown, state), do: {:noreply, state}

  @impl true
  def handle_info(:tick, state) do
    state = tick(state)

    cond do
      state.lease == nil or state.renewing != nil ->
        {:noreply, state}

      state.pace == :keeper ->
        {:noreply, start_renewal(state)}

      state.asked ->
        {:noreply, state}

      true ->
        send(state.owner_pid, {:synod_lease, self(), :tick})
        {:noreply, %{state | asked: true}}
    end
  end

  def handle_info({ref, {lease, sent, result}}, %{renewing: ref} = state) do
    Process.demonitor(ref, [:flush])
    state = %{state | renewing: nil}

    cond do
      state.lease != lease ->
        {:noreply, state}

      match?({:ok, _}, result) ->
        report(state, {:renewed, lease, sent})
        {:noreply, state}

      result == {:error, :lease_not_found} ->
        # The one report of this lease's loss: it is forgotten at once.
        report(state, {:lost, lease})
        {:noreply, %{state | lease: nil}}

      true ->
        {:error, reason} = result
        report(state, {:error, lease, reason})
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, _, _}, %{renewing: ref} = state),
    do: {:noreply, %{state | renewing: nil}}

  def handle_info({:DOWN, ref, :process, _, _}, %{owner: ref} = state) do
    if state.on_owner_exit == :revoke, do: revoke_lease(state)
    {:stop, :normal, state}
  end

  def handle_info({:idle, ref}, %{idle: ref, in_use: 0} = state) do
    revoke_lease(state)
    {:stop, :normal, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp start_renewal(%{lease: lease, renewing: nil} = state) when lease != nil do
    task = renew_async(state.store, lease, state.call_timeout)
    %{state | renewing: task.ref}
  end

  defp start_renewal(state), do: state

  defp report(%{notify: true} = state, event),
    do: send(state.owner_pid, {:synod_lease, self(), event})

  defp report(_state, _event), do: :ok

  defp ensure_lease(%{lease: nil} = state, timeout) do
    sent = now()

    case Store.grant(state.store, state.ttl, timeout: timeout) do
      {:ok, lease, _ttl} -> {:ok, %{state | lease: lease}, sent}
      {:error, _} = error -> error
    end
  end

  defp ensure_lease(state, _timeout), do: {:ok, state, nil}

  # An unreachable store lets the lease expire on its own within ttl.
  defp revoke_lease(%{lease: nil}), do: :ok

  defp revoke_lease(state) do
    _ = Store.revoke(state.store, state.lease, timeout: state.ttl)
    :ok
  end

  defp tick(state) do
    Process.send_after(self(), :tick, max(div(state.ttl, 3), 10))
    state
  end

  defp idle(state) do
    ref = make_ref()
    Process.send_after(self(), {:idle, ref}, state.ttl * 4)
    %{state | idle: ref}
  end

  # (the BIF itself: System.monotonic_time/1 normalizes its unit first)
  defp now, do: :erlang.monotonic_time(:millisecond)
end
