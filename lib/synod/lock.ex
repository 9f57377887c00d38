defmodule Synod.Lock do
  @moduledoc """
  Locks in a `Synod.Store`, with fencing tokens, FIFO waiting and release on
  the holder's death.

      {:ok, :done} =
        Synod.Lock.lock(:cfg, "jobs/nightly", fn token ->
          # token: an integer that grows with every grant of this lock; pass it
          # to the resources the lock protects so they can refuse older holders
          :done
        end, ttl: 5_000)

      {:ok, token, :done} = Synod.Lock.try_lock(:cfg, "jobs/nightly", fn -> :done end)
      {:error, :locked} = Synod.Lock.try_lock(:cfg, "jobs/nightly", fn -> :never end)

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

  **Leases.** Each process that takes locks gets a `Synod.Coord.LeaseKeeper`
  (one per store and TTL) that holds a lease of `ttl` ms and renews it
  every `ttl/3`. The keeper monitors the process: when it dies, the keeper
  revokes the lease at once, which deletes every contender key of that
  process in one revision, so its locks go to their next waiters. If the
  holder's node dies or is cut off, the lease expires after `ttl` on the
  store's leader. The keeper revokes its lease and exits after `ttl * 4`
  without locks.

  ## Events

  `[:synod, :lock, :acquired]` (`%{wait}`: native time from the call to
  the grant; `%{store, key, token}`) once the lock is held, and
  `[:synod, :lock, :released]` (`%{hold}`; `%{store, key, token, result:
  :ok | :lock_lost}`) after the release, through `Synod.Telemetry`.

  ## Failure behaviour

  `fun` runs in the caller. The lock is held while the lease lives; if the
  lease is lost while `fun` runs (the holder was paused or cut off for longer
  than `ttl`), a later contender may be granted the lock with a larger token,
  and `lock/4` returns `{:error, {:lock_lost, result}}` after `fun` returns.
  It returns the same when the release cannot confirm that the lock was
  still held (the store stayed unreachable through its retries): `{:ok,
  result}` always means that no other contender held the lock while `fun`
  ran. Resources guarded by the lock must check the token all the same.

  A store call whose outcome is unknown (timeout while the store elects a
  leader) while joining the queue is cleaned up: the contender key is
  deleted, or, if that cannot be confirmed, the keeper drops its lease so
  that the key expires — no orphan key can block the lock.
  """

  alias Synod.Coord.{Deadline, LeaseKeeper, Options, Stores, Watch}
  alias Synod.{Store, Telemetry}

  @prefix "synod/lock/"
  @default_ttl 10_000

  @schema [
    ttl: [type: {:ms, 30}, default: @default_ttl],
    timeout: [type: :timeout, default: :infinity],
    call_timeout: [type: :pos_integer, default: 5_000]
  ]

  @type token :: pos_integer()
  @type option ::
          {:ttl, pos_integer()} | {:timeout, timeout()} | {:call_timeout, pos_integer()}
  @type lock_fun :: (() -> term()) | (token() -> term())

  @doc """
  Waits for the lock `key`, runs `fun` while holding it, and releases it.

  `fun` takes no argument or the fencing token. Returns `{:ok,
  fun_result}`, `{:error, {:lock_lost, fun_result}}` (the lease was lost
  while `fun` ran, or the release could not confirm it was not), or
  `{:error, reason}`: `:timeout` when the lock could not be taken in time,
  `:lease_expired` when the lease ran out while waiting, `{:unknown_store,
  store}` at once for a store that does not run. A `fun` that raises
  releases the lock and re-raises.

  Options: `ttl:` the lease that keeps the lock, in ms (default
  #{@default_ttl}; >= 30): the lock outlives a holder that cannot renew by
  at most `ttl`; `timeout:` how long to wait for the lock in total (ms or
  `:infinity`, the default); `call_timeout:` each store round trip (ms,
  default 5000).
  """
  @spec lock(Store.store(), binary(), lock_fun(), [option()]) ::
          {:ok, term()} | {:error, term()}
  def lock(store, key, fun, opts \\ []) do
    with_contender(store, key, fun, opts, :wait)
  end

  @doc """
  Takes the lock `key` only if it is free now: runs `fun` and returns
  `{:ok, token, fun_result}` with the fencing token of this grant, or
  returns `{:error, :locked}` at once (also when other contenders are
  queued). Other results and options as `lock/4`.
  """
  @spec try_lock(Store.store(), binary(), lock_fun(), [option()]) ::
          {:ok, token(), term()} | {:error, term()}
  def try_lock(store, key, fun, opts \\ []) do
    with_contender(store, key, fun, opts, :try)
  end

  @doc "The prefix under which the contenders of lock `key` keep their keys."
  @spec contenders_prefix(binary()) :: binary()
  def contenders_prefix(key) when is_binary(key) and key != "", do: @prefix <> key <> "/"

  defp with_contender(store, key, fun, opts, mode) do
    check_args!(store, key, fun)
    opts = Options.validate!(opts, @schema)

    ctx = %{
      store: store,
      key: key,
      started: System.monotonic_time(),
      prefix: contenders_prefix(key),
      ttl: opts.ttl,
      call_timeout: opts.call_timeout,
      deadline: Deadline.new(opts.timeout)
    }

    with :ok <- Stores.check(store),
         {:ok, keeper, lease} <- LeaseKeeper.checkout(store, opts.ttl, opts.call_timeout) do
      try do
        case join(ctx, keeper, lease, mode) do
          {:ok, my_key, token} ->
            acquired = System.monotonic_time()

            Telemetry.execute(
              [:synod, :lock, :acquired],
              %{wait: acquired - ctx.started},
              %{store: store, key: key, token: token}
            )

            hold(%{ctx | started: acquired}, keeper, my_key, token, fun, mode)

          error ->
            error
        end
      after
        LeaseKeeper.checkin(keeper)
      end
    end
  end

  defp hold(ctx, keeper, my_key, token, fun, mode) do
    result =
      try do
        if is_function(fun, 1), do: fun.(token), else: fun.()
      catch
        kind, reason ->
          released(ctx, token, release(ctx, keeper, my_key, token))
          :erlang.raise(kind, reason, __STACKTRACE__)
      end

    case {released(ctx, token, release(ctx, keeper, my_key, token)), mode} do
      {:released, :wait} -> {:ok, result}
      {:released, :try} -> {:ok, token, result}
      {:lost, _} -> {:error, {:lock_lost, result}}
    end
  end

  defp released(ctx, token, outcome) do
    Telemetry.execute(
      [:synod, :lock, :released],
      %{hold: System.monotonic_time() - ctx.started},
      %{
        store: ctx.store,
        key: ctx.key,
        token: token,
        result: if(outcome == :released, do: :ok, else: :lock_lost)
      }
    )

    outcome
  end

  # The positional arguments, by guards when they are good (the common
  # case, a few instructions); else Synod.Coord.Options names the bad one.
  defp check_args!(store, key, fun)
       when is_atom(store) and store not in [nil, true, false] and is_binary(key) and
              byte_size(key) in 1..3_000 and (is_function(fun, 0) or is_function(fun, 1)),
       do: :ok

  defp check_args!(store, key, fun) do
    Options.check!(store, :store, :atom)
    Options.check!(key, :key, {:binary, 3_000})
    Options.check!(fun, :fun, {:or, [{:fun, 0}, {:fun, 1}]})
    :ok
  end

  # -- joining the queue ----------------------------------------------------------

  # Puts this contender's key and reads every contender in one transaction;
  # then holds, waits for its predecessor, or (try) gives up.
  defp join(ctx, keeper, lease, mode) do
    my_key = ctx.prefix <> Integer.to_string(lease, 16) <> "." <> unique()
    # "node #PID<...>", as inspect/1 writes a local pid, without Inspect.
    value =
      <<Atom.to_string(node())::binary, " #PID",
        :erlang.list_to_binary(:erlang.pid_to_list(self()))::binary>>

    contenders = {:range, ctx.prefix, prefix: true, keys_only: true}

    result =
      Store.txn(
        ctx.store,
        [{:absent, my_key}],
        [{:put, my_key, value, lease: lease}, contenders],
        [contenders],
        call(ctx)
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
          nil -> give_up(ctx, keeper, my_key, {:error, :lease_expired})
        end

      {:error, :lease_not_found} ->
        # The keeper's lease expired (the keeper could not renew it): get a
        # fresh one and join again.
        with {:ok, lease} <- LeaseKeeper.replace(keeper, lease, ctx.call_timeout),
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
        give_up(ctx, keeper, my_key, {:error, :lease_expired})

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
    case Store.get(ctx.store, my_key, call(ctx)) do
      {:ok, %{create_revision: ^token}} -> {:ok, my_key, token}
      {:ok, _} -> give_up(ctx, keeper, my_key, {:error, :lease_expired})
      {:error, _} = error -> give_up(ctx, keeper, my_key, error)
    end
  end

  defp wait_turn(ctx, keeper, my_key, token, [pred | rest], from, mode) do
    case Watch.await_delete(ctx.store, pred, from, ctx.deadline, call(ctx)) do
      :deleted -> wait_turn(ctx, keeper, my_key, token, rest, from, mode)
      :recheck -> recheck(ctx, keeper, my_key, token, mode)
      :timeout -> give_up(ctx, keeper, my_key, {:error, :timeout})
      {:error, _} = error -> give_up(ctx, keeper, my_key, error)
    end
  end

  # The watch ended (its server went away, or the history it needed was
  # compacted): read the contenders again.
  defp recheck(ctx, keeper, my_key, token, mode) do
    opts = call(ctx)

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
      Store.txn(ctx.store, compare, [{:delete, my_key}], [], call(ctx))
    end

    case retry(ctx, txn) do
      {:ok, _rev, true, _} ->
        :released

      {:ok, _rev, false, _} ->
        keep_alive = fn ->
          Store.keep_alive(ctx.store, lease_of(ctx, my_key), call(ctx))
        end

        case retry(ctx, keep_alive) do
          {:ok, _} -> :released
          {:error, _} -> :lost
        end

      {:error, _} ->
        # Let the key expire with the lease rather than keep it in the queue.
        LeaseKeeper.discard(keeper)
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
    case retry(ctx, fn -> Store.delete(ctx.store, my_key, call(ctx)) end) do
      {:ok, _, _, _} -> :ok
      {:error, _} -> LeaseKeeper.discard(keeper)
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

  defp call(ctx), do: [timeout: ctx.call_timeout]

  defp unique, do: Integer.to_string(System.unique_integer([:positive]), 36)
end
