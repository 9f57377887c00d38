defmodule Synod.Coord.LeaseKeeper do
  @moduledoc """
  The keeper of a process's store lease: one keeper per owner process,
  store and TTL. It grants the lease on first use, renews it every `ttl/3`
  from a separate task (a slow store never delays the reaction to the
  owner's death), revokes it at once when the owner dies, and revokes it
  and exits after `ttl * 4` without users.

      {:ok, keeper, lease} = Synod.Coord.LeaseKeeper.checkout(store, ttl, 5_000)
      # ... keys put with lease: lease ...
      :ok = Synod.Coord.LeaseKeeper.checkin(keeper)

  A renewal answered `lease_not_found` means the lease is gone (it expired
  on the store's leader): the keeper forgets it, once, and the next
  `checkout/3` grants a new one. `replace/3` does the same at once for a
  caller that learnt of the loss from the store. `discard/1` stops renewing
  a lease whose keys must go (their fate is unknown): they expire with it.
  """

  use GenServer

  alias Synod.Store

  @doc """
  The calling process's lease on `store` with `ttl` (ms), granted if needed,
  and its keeper, counted as in use until `checkin/1`. `timeout` bounds the
  grant.
  """
  @spec checkout(atom(), pos_integer(), pos_integer()) ::
          {:ok, pid(), pos_integer()} | {:error, term()}
  def checkout(store, ttl, timeout) do
    slot = {__MODULE__, store, ttl}

    case Process.get(slot) && call(Process.get(slot), :checkout, timeout) do
      {:ok, lease} ->
        {:ok, Process.get(slot), lease}

      {:error, _} = error ->
        error

      _gone ->
        {:ok, pid} = GenServer.start(__MODULE__, {store, ttl, self()})
        Process.put(slot, pid)

        case call(pid, :checkout, timeout) do
          {:ok, lease} -> {:ok, pid, lease}
          {:error, _} = error -> error
          :noproc -> {:error, :keeper_down}
        end
    end
  end

  @doc "Ends one use of the lease (see `checkout/3`)."
  @spec checkin(pid()) :: :ok
  def checkin(keeper), do: GenServer.cast(keeper, :checkin)

  @doc "`old` was found gone: forget it and grant a new lease."
  @spec replace(pid(), pos_integer(), pos_integer()) :: {:ok, pos_integer()} | {:error, term()}
  def replace(keeper, old, timeout) do
    case call(keeper, {:replace, old}, timeout) do
      {:ok, lease} -> {:ok, lease}
      {:error, _} = error -> error
      :noproc -> {:error, :keeper_down}
    end
  end

  @doc "Stops renewing the current lease: it expires within its TTL with its keys."
  @spec discard(pid()) :: :ok
  def discard(keeper), do: GenServer.cast(keeper, :discard)

  @doc """
  Starts one renewal (`Synod.Store.keep_alive/3`) of `lease` in a task
  linked to the caller; the task replies `{lease, sent_at, result}`, where
  `sent_at` is the `System.monotonic_time(:millisecond)` the renewal was
  sent at (a lease confirmed alive lives at least `ttl` from then). The
  keeper's renewals and an election candidate's use it.
  """
  @spec renew_async(atom(), pos_integer(), pos_integer()) :: Task.t()
  def renew_async(store, lease, timeout) do
    Task.async(fn ->
      sent = System.monotonic_time(:millisecond)
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
  def init({store, ttl, owner}) do
    state = %{
      store: store,
      ttl: ttl,
      owner: Process.monitor(owner),
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
      {:ok, state} -> {:reply, {:ok, state.lease}, %{state | idle: nil, in_use: state.in_use + 1}}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call({:replace, old}, _from, state) do
    state = if state.lease == old, do: %{state | lease: nil}, else: state

    case ensure_lease(state) do
      {:ok, state} -> {:reply, {:ok, state.lease}, state}
      {:error, _} = error -> {:reply, error, state}
    end
  end

  def handle_call(_unknown, _from, state), do: {:reply, {:error, :unknown_call}, state}

  @impl true
  def handle_cast(:checkin, state) do
    state = %{state | in_use: state.in_use - 1}
    {:noreply, if(state.in_use == 0, do: idle(state), else: state)}
  end

  def handle_cast(:discard, state), do: {:noreply, %{state | lease: nil}}
  def handle_cast(_unknown, state), do: {:noreply, state}

  @impl true
  def handle_info(:tick, state) do
    state = tick(state)

    case state do
      %{lease: lease, renewing: nil} when lease != nil ->
        task = renew_async(state.store, lease, max(div(state.ttl, 2), 50))
        {:noreply, %{state | renewing: task.ref}}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({ref, {lease, _sent, result}}, %{renewing: ref} = state) do
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
    case Store.grant(state.store, state.ttl) do
      {:ok, lease, _ttl} -> {:ok, %{state | lease: lease}}
      {:error, _} = error -> error
    end
  end

  defp ensure_lease(state), do: {:ok, state}

  # An unreachable store lets the lease expire on its own within ttl.
  defp revoke(%{lease: nil}), do: :ok

  defp revoke(state) do
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
end
