defmodule Synod.Election.Watcher do
  @moduledoc false
  # The process behind Synod.Election.watch/4: reads an election's seat,
  # then follows it with a store watch and tells its target about every
  # change of holder or token. It ends with its target.
  #
  # It never decides anything: it only reports what the store committed, in
  # revision order. After the serving member went away it watches again
  # from the revision after the last one seen; after a compaction it reads
  # the seat again (and reports only if it changed).

  use GenServer
  alias Synod.Store

  @retry_ms 200

  def start(store, election, key, target) do
    GenServer.start(__MODULE__, {store, election, key, target})
  end

  def stop(pid) do
    GenServer.stop(pid)
  catch
    :exit, _ -> :ok
  end

  @impl true
  def init({store, election, key, target}) do
    Process.monitor(target)

    state = %{
      store: store,
      election: election,
      key: key,
      target: target,
      current: nil,
      watch: nil
    }

    {:ok, state, {:continue, :read}}
  end

  @impl true
  def handle_continue(:read, state), do: {:noreply, read(state)}

  @impl true
  def handle_info(:read, state), do: {:noreply, read(state)}

  def handle_info({:synod_watch, ref, {:error, _}}, %{watch: {ref, _}} = state),
    do: {:noreply, read(%{state | watch: nil})}

  def handle_info({:synod_watch, ref, events}, %{watch: {ref, _}} = state) do
    state =
      Enum.reduce(events, state, fn
        {:put, _rev, kv, _prev}, st -> report(st, holder(st, kv))
        {:delete, _rev, _kv, _prev}, st -> report(st, holder(st, nil))
      end)

    {:noreply, %{state | watch: {ref, events |> List.last() |> elem(1)}}}
  end

  def handle_info({:DOWN, ref, :process, _, _}, %{watch: {ref, last}} = state),
    do: {:noreply, watch(%{state | watch: nil}, last + 1)}

  def handle_info({:DOWN, _ref, :process, pid, _}, %{target: pid} = state),
    do: {:stop, :normal, state}

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def handle_call(_unknown, _from, state), do: {:reply, {:error, :unknown_call}, state}

  @impl true
  def handle_cast(_unknown, state), do: {:noreply, state}

  # The revision first, then the seat: every change after the revision is
  # delivered by the watch; one already seen by the read is not reported
  # twice (report/2 drops non-changes).
  defp read(state) do
    with {:ok, rev} <- Store.revision(state.store),
         {:ok, kv} <- Store.get(state.store, state.key) do
      state |> report(holder(state, kv)) |> watch(rev + 1)
    else
      {:error, _} ->
        Process.send_after(self(), :read, @retry_ms)
        state
    end
  end

  defp watch(state, from) do
    case Store.watch(state.store, state.key, from: from) do
      {:ok, ref} ->
        %{state | watch: {ref, from - 1}}

      {:error, _} ->
        Process.send_after(self(), :read, @retry_ms)
        state
    end
  end

  defp holder(_state, nil), do: %{leader: nil, token: nil, record: nil}

  defp holder(state, kv) do
    record = Synod.Election.record(state.election, kv)
    %{leader: record.leader_id, token: record.revision, record: record}
  end

  defp report(%{current: same} = state, same), do: state

  defp report(state, holder) do
    send(state.target, {:synod_election_leader, state.election, state.current, holder})
    %{state | current: holder}
  end
end
