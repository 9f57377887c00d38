defmodule Synod.Lock do
  @moduledoc """
  Locks in a `Synod.Store`, with fencing tokens, FIFO waiting and release on
  the holder's death.

      {:ok, :done} =
        Synod.Lock.lock(:cfg, "jobs/nightly", 5_000, fn token ->
          # token: an integer that grows with every grant of this lock; pass it
          # to the resources the lock protects so they can refuse older holders
          :done
        end)

      {:error, :locked} = Synod.Lock.try_lock(:cfg, "jobs/nightly", 5_000, fn -> :never end)

  ## How it works (etcd's lock recipe)

  A contender for lock `key` puts its own key `synod/lock/<key>/<lease>.<n>`,
  attached to a lease, in a transaction that also reads every contender's
  key. Contenders hold the lock in the order of their keys'
  `create_revision`: the one with the smallest holds it. Every other waits
  for the contender just before it (its predecessor) to go, by a watch on
  that one key — no polling, and a release wakes only the next waiter.
  Waiters are served first come, first served (the store's revision order),
  so no waiter starves.

  **Fencing token.** The holder's token is its key's `create_revision`: the
  revision at which it joined the queue, which is the revision its
  acquisition was decided on. Since the lock goes to contenders in
  `create_revision` order and revisions never repeat, each grant of a lock
  has a larger token than every earlier grant — also when a holder lost
  the lock to lease expiry while still running.

  **Release** is a transaction that deletes the contender's key only if its
  `create_revision` is still the token: a holder whose key went with its
  lease can never delete a later holder's key.

  **Leases.** Each process that takes locks gets a keeper process (one per
  store and TTL) that holds a lease of `ttl` ms and renews it every `ttl/3`.
  The keeper monitors the process: when it dies, the keeper revokes the
  lease at once, which deletes every contender key of that process in one
  revision, so its locks go to their next waiters. If the holder's node dies
  or is cut off, the lease expires after `ttl` on the store's leader. The
  keeper revokes its lease and exits after `ttl * 4` without locks.

  ## Failure behaviour

  `fun` runs in the caller. The lock is held while the lease lives; if the
  lease is lost while `fun` runs (the holder was paused or cut off for longer
  than `ttl`), a later contender may be granted the lock with a larger token,
  and `lock/5` returns `{:error, {:lock_lost, result}}` after `fun` returns.
  It returns the same when the release cannot confirm that the lock was
  still held (the store stayed unreachable through its retries): `{:ok,
  result}` always means that no other contender held the lock while `fun`
  ran. Resources guarded by the lock must check the token all the same.

  A store call whose outcome is unknown (timeout while the store elects a
  leader) while joining the queue is cleaned up: the contender key is
  deleted, or, if that cannot be confirmed, the keeper drops its lease so
  that the key expires — no orphan key can block the lock.
  """

  alias Synod.Store

  @prefix "synod/lock/"

  @type token :: pos_integer()
  @type option :: {:timeout, timeout()} | {:call_timeout, pos_integer()}

  @doc """
  Waits for the lock `key`, runs `fun` while holding it, and releases it.

  `fun` takes no argument or the fencing token. `ttl` (ms) is the lease
  that keeps the lock: the lock outlives a holder that cannot renew by at
  most `ttl`. Returns `{:ok, fun_result}`, `{:error, {:lock_lost,
  fun_result}}` (the lease was lost while `fun` ran), or `{:error, reason}`
  (`:timeout` when the lock could not be taken in time). A `fun` that raises
  releases the lock and re-raises.

  Options: `timeout:` how long to wait for the lock (ms or `:infinity`,
  the default); `call_timeout:` each store call (ms, default 5000).
  """
  @spec lock(Store.store(), binary(), pos_integer(), (() -> term()) | (token() -> term()), [
          option()
        ]) ::
          {:ok, term()} | {:error, term()}
  def lock(store, key, ttl, fun, opts \\ []) do
    with_contender(store, key, ttl, fun, opts, :wait)
  end

  @doc """
  Takes the lock `key` only if it is free now: runs `fun` and returns
  `{:ok, fun_result}`, or returns `{:error, :locked}` at once (also when
  other contenders are queued). Other results and options as `lock/5`.
  """
  @spec try_lock(
          Store.store(),
          binary(),
          pos_integer(),
          (() -> term()) | (token() -> term()),
          [option()]
        ) ::
          {:ok, term()} | {:error, term()}
  def try_lock(store, key, ttl, fun, opts \\ []) do
    with_contender(store, key, ttl, fun, opts, :try)
  end

  @doc "The prefix under which the contenders of lock `key` keep their keys."
  @spec contenders_prefix(binary()) :: binary()
  def contenders_prefix(key) when is_binary(key) and key != "", do: @prefix <> key <> "/"

  defp with_contender(store, key, ttl, fun, opts, mode) do
    check!(key, ttl, fun, opts)
    ctx = context(store, key, ttl, opts)

    with {:ok, keeper, lease} <- checkout(store, ttl, ctx.call_timeout) do
      try do
        case join(ctx, keeper, lease, mode) do
          {:ok, my_key, token} -> hold(ctx, keeper, my_key, token, fun)
          error -> error
        end
      after
        checkin(keeper)
      end
    end
  end

  defp context(store, key, ttl, opts) do
    timeout = Keyword.get(opts, :timeout, :infinity)

    %{
      store: store,
      prefix: contenders_prefix(key),
      ttl: ttl,
      call_timeout: Keyword.get(opts, :call_timeout, 5_000),
      deadline:
        if(timeout == :infinity,
          do: :infinity,
          else: System.monotonic_time(:millisecond) + timeout
        )
    }
  end

  defp hold(ctx, keeper, my_key, token, fun) do
    result =
      try do
        if is_function(fun, 1), do: fun.(token), else: fun.()
      catch
        kind, reason ->
          release(ctx, keeper, my_key, token)
          :erlang.raise(kind, reason, __STACKTRACE__)
      end

    case release(ctx, keeper, my_key, token) do
      :released -> {:ok, result}
      :lost -> {:error, {:lock_lost, result}}
    end
  end

  # -- joining the queue ----------------------------------------------------------

  # Puts this contender's key and reads every contender in one transaction;
  # then holds, waits for its predecessor, or (try) gives up.
  defp join(ctx, keeper, lease, mode) do
    my_key = ctx.prefix <> Integer.to_string(lease, 16) <> "." <> unique()
    value = "#{node()} #{inspect(self())}"
    contenders = {:range, ctx.prefix, prefix: true, keys_only: true}

    result =
      Store.txn(
        ctx.store,
        [{:absent, my_key}],
        [{:put, my_key, value, lease: lease}, contenders],
        [contenders],
        timeout: ctx.call_timeout
      )

    case result do
      {:ok, rev, true, [_put, {:range, kvs, _, _}]} ->
        decide(ctx, keeper, my_key, rev, rev, kvs, mode)

      {:ok, rev, false, [{:range, kvs, _, _}]} ->
        # Our key already exists: only this call writes it, so this is the
        # answer to a resent request whose first copy was applied
        # (Synod.Raft resends after losing the leader). The token is the
        # key's create_revision.
        case Enum.find(kvs, &(&1.key == my_key)) do
          %{create_revision: token} -> decide(ctx, keeper, my_key, token, rev, kvs, mode)
          nil -> give_up(ctx, keeper, my_key, {:error, :lease_lost})
        end

      {:error, :lease_not_found} ->
        # The keeper's lease expired (the keeper could not renew it): get a
        # fresh one and join again.
        with {:ok, lease} <- renew_lease(keeper, lease, ctx.call_timeout),
             do: join(ctx, keeper, lease, mode)

      {:error, _} = error ->
        # Unknown outcome: the key may exist; it must not stay in the queue.
        cleanup(ctx, keeper, my_key)
        error
    end
  end

  # `kvs` is every contender at revision `seen` or later; `token` is ours.
  # The contenders before us can only leave (later ones have larger
  # create revisions), so we wait for each, nearest first, by a watch from
  # `seen + 1`, which delivers its delete even if it already happened.
  defp decide(ctx, keeper, my_key, token, seen, kvs, mode) do
    earlier =
      kvs
      |> Enum.filter(&(&1.create_revision < token))
      |> Enum.sort_by(& &1.create_revision, :desc)
      |> Enum.map(& &1.key)

    cond do
      not Enum.any?(kvs, &(&1.key == my_key and &1.create_revision == token)) ->
        give_up(ctx, keeper, my_key, {:error, :lease_lost})

      earlier == [] ->
        {:ok, my_key, token}

      mode == :try ->
        give_up(ctx, keeper, my_key, {:error, :locked})

      true ->
        wait_turn(ctx, keeper, my_key, token, earlier, seen + 1, mode)
    end
  end

  # Every contender before us has left: one read confirms that our own key
  # (our lease) is still there.
  defp wait_turn(ctx, keeper, my_key, token, [], _from, _mode) do
    case Store.get(ctx.store, my_key, timeout: ctx.call_timeout) do
      {:ok, %{create_revision: ^token}} -> {:ok, my_key, token}
      {:ok, _} -> give_up(ctx, keeper, my_key, {:error, :lease_lost})
      {:error, _} = error -> give_up(ctx, keeper, my_key, error)
    end
  end

  defp wait_turn(ctx, keeper, my_key, token, [pred | rest], from, mode) do
    case wait_deleted(ctx, pred, from) do
      :deleted -> wait_turn(ctx, keeper, my_key, token, rest, from, mode)
      :recheck -> recheck(ctx, keeper, my_key, token, mode)
      {:error, _} = error -> give_up(ctx, keeper, my_key, error)
    end
  end

  # The watch ended (its server went away, or the history it needed was
  # compacted): read the contenders again.
  defp recheck(ctx, keeper, my_key, token, mode) do
    opts = [timeout: ctx.call_timeout]

    with {:ok, rev} <- Store.revision(ctx.store, opts),
         {:ok, kvs, _, _} <-
           Store.range(ctx.store, ctx.prefix, [prefix: true, keys_only: true] ++ opts) do
      decide(ctx, keeper, my_key, token, rev, kvs, mode)
    else
      {:error, _} = error -> give_up(ctx, keeper, my_key, error)
    end
  end

  defp give_up(ctx, keeper, my_key, error) do
    cleanup(ctx, keeper, my_key)
    error
  end

  # Waits until `key` is deleted at or after revision `from`.
  defp wait_deleted(ctx, key, from) do
    case Store.watch(ctx.store, key, from: from, timeout: ctx.call_timeout) do
      {:ok, ref} ->
        result = await_delete(ref, ctx.deadline)
        if result != :recheck, do: Store.unwatch(ctx.store, ref)
        flush(ref)
        result

      {:error, _} = error ->
        error
    end
  end

  defp await_delete(ref, deadline) do
    receive do
      {:synod_watch, ^ref, events} when is_list(events) ->
        if Enum.any?(events, &(elem(&1, 0) == :delete)),
          do: :deleted,
          else: await_delete(ref, deadline)

      {:synod_watch, ^ref, {:error, _}} ->
        :recheck

      {:DOWN, ^ref, :process, _, _} ->
        :recheck
    after
      remaining(deadline) -> {:error, :timeout}
    end
  end

  defp flush(ref) do
    receive do
      {:synod_watch, ^ref, _} -> flush(ref)
    after
      0 -> :ok
    end
  end

  defp remaining(:infinity), do: :infinity
  defp remaining(deadline), do: max(deadline - System.monotonic_time(:millisecond), 0)

  # -- leaving ----------------------------------------------------------------------

  # Deletes our key only if it is still the one that joined with `token`.
  # The lock was held through `fun` only if that delete finds the key, or if
  # the key's lease still lives: while it lives only our own delete removes
  # the key (an earlier attempt, or a request Synod.Raft resent after
  # losing the leader). A key gone with its lease, or an outcome that cannot
  # be confirmed, means another contender may have held the lock meanwhile.
  defp release(ctx, keeper, my_key, token) do
    compare = [{:create_revision, my_key, :==, token}]

    txn = fn ->
      Store.txn(ctx.store, compare, [{:delete, my_key}], [], timeout: ctx.call_timeout)
    end

    case retry(ctx, txn) do
      {:ok, _rev, true, _} ->
        :released

      {:ok, _rev, false, _} ->
        keep_alive = fn ->
          Store.keep_alive(ctx.store, lease_of(ctx, my_key), timeout: ctx.call_timeout)
        end

        case retry(ctx, keep_alive) do
          {:ok, _} -> :released
          {:error, _} -> :lost
        end

      {:error, _} ->
        # Let the key expire with the lease rather than keep it in the queue.
        discard_lease(keeper)
        :lost
    end
  end

  defp lease_of(ctx, my_key) do
    [hex, _] =
      my_key
      |> binary_part(byte_size(ctx.prefix), byte_size(my_key) - byte_size(ctx.prefix))
      |> String.split(".")

    String.to_integer(hex, 16)
  end

  # Removes a contender key whose fate is unknown (a join that timed out, a
  # wait given up). The key is ours alone, so an unconditional delete is safe.
  defp cleanup(ctx, keeper, my_key) do
    case retry(ctx, fn -> Store.delete(ctx.store, my_key, timeout: ctx.call_timeout) end) do
      {:ok, _, _, _} -> :ok
      {:error, _} -> discard_lease(keeper)
    end
  end

  defp retry(ctx, call, attempts \\ 3) do
    case call.() do
      {:error, reason} when attempts > 1 and reason != :lease_not_found ->
        Process.sleep(min(div(ctx.ttl, 10) + 10, 200))
        retry(ctx, call, attempts - 1)

      result ->
        result
    end
  end

  defp unique, do: Integer.to_string(System.unique_integer([:positive]), 36)

  # -- the keeper of this process's lease -----------------------------------------

  defp checkout(store, ttl, timeout) do
    slot = {__MODULE__, store, ttl}

    keeper =
      case Process.get(slot) do
        pid when is_pid(pid) -> pid
        nil -> nil
      end

    case keeper && call_keeper(keeper, :checkout, timeout) do
      {:ok, lease} ->
        {:ok, keeper, lease}

      {:error, _} = error ->
        error

      _gone ->
        {:ok, pid} = __MODULE__.Keeper.start(store, ttl, self())
        Process.put(slot, pid)

        case call_keeper(pid, :checkout, timeout) do
          {:ok, lease} -> {:ok, pid, lease}
          {:error, _} = error -> error
          :noproc -> {:error, :keeper_down}
        end
    end
  end

  defp renew_lease(keeper, old, timeout) do
    case call_keeper(keeper, {:lost, old}, timeout) do
      {:ok, lease} -> {:ok, lease}
      {:error, _} = error -> error
      :noproc -> {:error, :keeper_down}
    end
  end

  defp call_keeper(keeper, request, timeout) do
    GenServer.call(keeper, request, timeout + 1_000)
  catch
    :exit, {:noproc, _} -> :noproc
    :exit, {:normal, _} -> :noproc
    :exit, {:timeout, _} -> {:error, :timeout}
  end

  defp checkin(keeper), do: GenServer.cast(keeper, :checkin)
  defp discard_lease(keeper), do: GenServer.cast(keeper, :discard)

  defp check!(key, ttl, fun, opts) do
    unless is_binary(key) and byte_size(key) in 1..3_000,
      do:
        raise(
          ArgumentError,
          "a lock key must be a binary of 1..3000 bytes, got: #{inspect(key, limit: 5)}"
        )

    unless is_integer(ttl) and ttl >= 30,
      do: raise(ArgumentError, "ttl must be an integer number of ms >= 30, got: #{inspect(ttl)}")

    unless is_function(fun, 0) or is_function(fun, 1),
      do: raise(ArgumentError, "fun must take no argument or the fencing token")

    unless Keyword.keyword?(opts), do: raise(ArgumentError, "options must be a keyword list")

    for {k, v} <- opts do
      case k do
        :timeout when v == :infinity or (is_integer(v) and v >= 0) ->
          :ok

        :call_timeout when is_integer(v) and v > 0 ->
          :ok

        _ ->
          raise ArgumentError,
                "bad option #{inspect(k)}: #{inspect(v)} (known: timeout:, call_timeout:)"
      end
    end
  end
end

defmodule Synod.Lock.Keeper do
  @moduledoc false
  # Holds the lease of one process's locks (one keeper per process, store and
  # TTL): grants it on first use, renews it every ttl/3 from a separate task
  # (a slow store never delays the reaction to the owner's death), revokes it
  # at once when the owner dies, and exits after ttl * 4 without locks.

  use GenServer

  def start(store, ttl, owner), do: GenServer.start(__MODULE__, {store, ttl, owner})

  @impl true
  def init({store, ttl, owner}) do
    ref = Process.monitor(owner)

    state = %{
      store: store,
      ttl: ttl,
      owner: ref,
      lease: nil,
      in_use: 0,
      renewing: nil,
      idle: nil
    }

    {:ok, tick(state)}
  end

  @impl true
  def handle_call(:checkout, _from, state) do
    case ensure_lease(state) do
      {:ok, state} -> {:reply, {:ok, state.lease}, %{busy(state) | in_use: state.in_use + 1}}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call({:lost, old}, _from, state) do
    state = if state.lease == old, do: %{state | lease: nil}, else: state

    case ensure_lease(state) do
      {:ok, state} -> {:reply, {:ok, state.lease}, state}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  @impl true
  def handle_cast(:checkin, state) do
    state = %{state | in_use: state.in_use - 1}
    {:noreply, if(state.in_use == 0, do: idle(state), else: state)}
  end

  # Stop renewing: the lease expires within its TTL, taking any key whose
  # fate we could not confirm with it. The next checkout gets a new lease.
  def handle_cast(:discard, state), do: {:noreply, %{state | lease: nil}}

  @impl true
  def handle_info(:tick, state) do
    state = tick(state)

    case state do
      %{lease: lease, renewing: nil} when lease != nil ->
        store = state.store
        timeout = max(div(state.ttl, 2), 50)

        task =
          Task.async(fn -> {lease, Synod.Store.keep_alive(store, lease, timeout: timeout)} end)

        {:noreply, %{state | renewing: task.ref}}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({ref, {lease, result}}, %{renewing: ref} = state) do
    Process.demonitor(ref, [:flush])
    state = %{state | renewing: nil}

    case result do
      {:error, :lease_not_found} when state.lease == lease -> {:noreply, %{state | lease: nil}}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, _, _}, %{renewing: ref} = state),
    do: {:noreply, %{state | renewing: nil}}

  def handle_info({:DOWN, ref, :process, _, _}, %{owner: ref} = state) do
    revoke(state)
    {:stop, :normal, state}
  end

  def handle_info({:idle, ref}, %{idle: ref, in_use: 0} = state) do
    revoke(state)
    {:stop, :normal, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp ensure_lease(%{lease: nil} = state) do
    case Synod.Store.grant(state.store, state.ttl) do
      {:ok, lease, _ttl} -> {:ok, %{state | lease: lease}}
      {:error, _} = error -> error
    end
  end

  defp ensure_lease(state), do: {:ok, state}

  defp revoke(%{lease: nil}), do: :ok

  defp revoke(state) do
    case Synod.Store.revoke(state.store, state.lease, timeout: state.ttl) do
      {:ok, _} -> :ok
      # Unreachable store: the lease expires on its own within ttl.
      {:error, _} -> :ok
    end
  end

  defp tick(state) do
    Process.send_after(self(), :tick, max(div(state.ttl, 3), 10))
    state
  end

  defp busy(state), do: %{state | idle: nil}

  defp idle(state) do
    ref = make_ref()
    Process.send_after(self(), {:idle, ref}, state.ttl * 4)
    %{state | idle: ref}
  end
end
