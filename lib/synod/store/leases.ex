defmodule Synod.Store.Leases do
  @moduledoc false
  # The store's lease clock, one per store member node; only the one on the
  # leader's node is active. Time never enters the state machine: this
  # process keeps each lease's deadline on the leader's monotonic clock and,
  # when one passes, proposes the lease's revoke through the log.
  #
  #   * On becoming leader it reads every lease with a linearizable query
  #     (which waits until the new leader has applied everything committed
  #     before its term) and starts each countdown at the full TTL: a lease
  #     lives at least its TTL whatever happens to leaders.
  #   * grant, keep_alive and revoke come here (Synod.Store routes them to
  #     the leader's node). A keep_alive restarts the countdown, then has
  #     the member confirm with a quorum that it is still leader before it
  #     answers {:ok, ttl}: a deposed leader cannot confirm a renewal that
  #     the real leader never saw.
  #   * On losing leadership it forgets every countdown.

  use GenServer
  require Logger

  alias Synod.Store.{Command, Machine}
  alias Synod.Stray

  # What Synod.Store.Command accepts; anything else from a remote caller is
  # an unknown call, not a crash.
  @max_ttl 1_099_511_627_776
  @max_id 4_611_686_018_427_387_903

  def name(store), do: :"Synod.Store.Leases.#{store}"

  def start_link(opts),
    do: GenServer.start_link(__MODULE__, opts[:name], name: name(opts[:name]))

  @impl true
  def init(store) do
    :ok = Synod.Raft.add_leader_watch(store, {__MODULE__, self()}, self())
    state = %{store: store, leading: false, deadlines: %{}, timer: nil}
    {:ok, if(Synod.Raft.leader?(store), do: lead(state), else: state)}
  end

  # Input from other nodes follows Synod.Stray: an unknown call is answered
  # {:error, {:bad_request, _}}, unknown casts and messages are dropped,
  # each logged at most once a second.
  @impl true
  def handle_call(request, from, state),
    do: Stray.call(request, from, state, who(state.store), known?(request), &call/3)

  defp known?({:grant, ttl}), do: ttl in 1..@max_ttl
  defp known?({:keep_alive, id}), do: id in 1..@max_id
  defp known?({:revoke, id}), do: id in 1..@max_id
  defp known?(_), do: false

  # The name in Synod.Stray's log lines, built only when one is logged.
  defp who(name), do: fn -> "store #{inspect(name)} leases" end

  defp call(_request, _from, %{leading: false} = state),
    do: {:reply, {:error, {:not_leader, Synod.Raft.leader(state.store)}}, state}

  defp call({:grant, ttl}, _from, state) do
    case command(state, Command.lease_grant(0, ttl)) do
      {:ok, _rev, {:lease_granted, id, ttl}} ->
        {:reply, {:ok, id, ttl}, schedule(put_deadline(state, id, ttl))}

      other ->
        {:reply, other, state}
    end
  end

  defp call({:keep_alive, id}, _from, state) do
    case Map.fetch(state.deadlines, id) do
      {:ok, {_deadline, ttl}} ->
        state = put_deadline(state, id, ttl)

        case Synod.Raft.confirm_leader(state.store) do
          :ok -> {:reply, {:ok, ttl}, state}
          {:error, _} = error -> {:reply, error, state}
        end

      :error ->
        {:reply, {:error, :lease_not_found}, state}
    end
  end

  defp call({:revoke, id}, _from, state) do
    case command(state, Command.lease_revoke(id)) do
      {:ok, rev, {:lease_revoked, ^id, _keys}} ->
        {:reply, {:ok, rev}, %{state | deadlines: Map.delete(state.deadlines, id)}}

      other ->
        {:reply, other, state}
    end
  end

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, who(state.store))

  @impl true
  def handle_info({:synod_leader_watch, _, _, :become_leader, _, _}, state),
    do: {:noreply, lead(state)}

  def handle_info({:synod_leader_watch, _, _, :become_follower, _, _}, state),
    do: {:noreply, %{state | leading: false, deadlines: %{}}}

  def handle_info(:expire, %{leading: true} = state) do
    now = now()
    {due, _} = Enum.split_with(state.deadlines, fn {_id, {deadline, _}} -> deadline <= now end)

    state =
      Enum.reduce(due, %{state | timer: nil}, fn {id, _}, state ->
        case command(state, Command.lease_revoke(id)) do
          {:ok, _rev, _} ->
            %{state | deadlines: Map.delete(state.deadlines, id)}

          {:error, :lease_not_found} ->
            %{state | deadlines: Map.delete(state.deadlines, id)}

          {:error, why} ->
            # Not leader any more, or no quorum: the next leader restarts
            # the countdown; if we still lead, try again shortly.
            Logger.debug("store #{state.store}: revoke of expired lease #{id}: #{inspect(why)}")
            state
        end
      end)

    {:noreply, schedule(state)}
  end

  def handle_info(:expire, state), do: {:noreply, %{state | timer: nil}}

  def handle_info(msg, state) do
    Stray.ignored(who(state.store), :message, msg)
    {:noreply, state}
  end

  defp lead(state) do
    case Synod.Raft.query(state.store, &Machine.leases/1, timeout: 5_000) do
      {:ok, leases} ->
        state = %{state | leading: true, deadlines: %{}}

        leases
        |> Enum.reduce(state, fn {id, ttl, _keys}, s -> put_deadline(s, id, ttl) end)
        |> schedule()

      {:error, why} ->
        Logger.debug("store #{state.store}: leases not loaded (#{inspect(why)})")
        %{state | leading: false}
    end
  end

  # Proposed through this node's member only: a keeper whose node lost the
  # leadership must not revoke (or grant) through the new leader, whose
  # countdowns restarted when it was elected.
  defp command(state, cmd) do
    case Synod.Raft.command(state.store, cmd, local: true) do
      {:ok, result} -> result
      error -> error
    end
  end

  defp put_deadline(state, id, ttl),
    do: %{state | deadlines: Map.put(state.deadlines, id, {now() + ttl, ttl})}

  # One timer, for the earliest deadline.
  defp schedule(%{deadlines: d} = state) when map_size(d) == 0, do: cancel(state)

  defp schedule(state) do
    state = cancel(state)
    next = state.deadlines |> Map.values() |> Enum.map(&elem(&1, 0)) |> Enum.min()
    %{state | timer: Process.send_after(self(), :expire, max(next - now(), 0) + 1)}
  end

  defp cancel(%{timer: nil} = state), do: state

  defp cancel(state) do
    Process.cancel_timer(state.timer)
    %{state | timer: nil}
  end

  # (the BIF itself: System.monotonic_time/1 normalizes its unit first)
  defp now, do: :erlang.monotonic_time(:millisecond)
end
