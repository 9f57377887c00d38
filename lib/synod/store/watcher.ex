defmodule Synod.Store.Watcher do
  @moduledoc false
  # The store's watches on one member node. It subscribes to its member's
  # applied index (Synod.Raft.subscribe_applied/2); each time the member has
  # applied more, it reads the change events from the lowest revision any
  # watch still needs (`Machine.events_since/3`, on the local state, which
  # follows the committed order) and sends each watch the events on its keys
  # that it has not had yet:
  #
  #   {:synod_watch, Ref, [Event]}                  in revision order
  #   {:synod_watch, Ref, {:error, {:compacted, R}}} history gone; watch ends
  #
  # Ref is the caller's monitor on this process, so a watch whose node goes
  # away ends with {:DOWN, Ref, ...} and the caller can resume from the last
  # revision it saw. Watches of a caller that exits are dropped.

  use GenServer

  alias Synod.Store.Machine

  # Events read per pass; a pass never splits a revision.
  @batch 1_000

  def name(store), do: :"Synod.Store.Watcher.#{store}"

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts[:name], name: name(opts[:name]))

  @impl true
  def init(store) do
    :ok = Synod.Raft.subscribe_applied(store)
    {:ok, %{store: store, watches: %{}, owners: %{}}}
  end

  @impl true
  def handle_call({:watch, ref, pid, range, from}, _from, state) do
    owners =
      if Map.has_key?(state.owners, pid),
        do: state.owners,
        else: Map.put(state.owners, pid, Process.monitor(pid))

    watch = %{pid: pid, range: range, next: from}
    state = %{state | owners: owners, watches: Map.put(state.watches, ref, watch)}
    {:reply, :ok, deliver(state)}
  end

  def handle_call({:unwatch, ref}, _from, state),
    do: {:reply, :ok, %{state | watches: Map.delete(state.watches, ref)}}

  @impl true
  def handle_info({:synod_raft_applied, _store, _index}, state), do: {:noreply, deliver(state)}

  def handle_info({:DOWN, _ref, :process, pid, _reason}, state) do
    watches = Map.reject(state.watches, fn {_ref, w} -> w.pid == pid end)
    {:noreply, %{state | watches: watches, owners: Map.delete(state.owners, pid)}}
  end

  def handle_info(_msg, state), do: {:noreply, state}

  defp deliver(%{watches: w} = state) when map_size(w) == 0, do: state

  defp deliver(state) do
    from = state.watches |> Map.values() |> Enum.map(& &1.next) |> Enum.min()

    case events(state.store, from) do
      {:ok, [], _next} ->
        state

      {:ok, events, next} ->
        watches =
          Map.new(state.watches, fn {ref, w} -> {ref, send_events(ref, w, events, next)} end)

        # More may wait beyond this batch.
        deliver_more(%{state | watches: watches}, next)

      {:error, {:compacted, _}} = error ->
        compacted(state, from, error)

      {:error, _} ->
        state
    end
  end

  defp deliver_more(state, next) do
    if Enum.any?(state.watches, fn {_, w} -> w.next < next end), do: deliver(state), else: state
  end

  defp send_events(ref, %{next: want} = w, events, next) do
    mine =
      Enum.filter(events, fn {_type, rev, kv, _prev} ->
        rev >= want and in_range?(kv.key, w.range)
      end)

    if mine != [], do: send(w.pid, {:synod_watch, ref, mine})
    %{w | next: max(want, next)}
  end

  # Watches that need history below the compaction revision end with an
  # error; the others go on.
  defp compacted(state, from, {:error, {:compacted, rev}} = error) do
    {gone, kept} = Enum.split_with(state.watches, fn {_ref, w} -> w.next <= rev end)
    for {ref, w} <- gone, do: send(w.pid, {:synod_watch, ref, error})
    state = %{state | watches: Map.new(kept)}
    if kept != [] and from <= rev, do: deliver(state), else: state
  end

  defp events(store, from) do
    case Synod.Raft.query(store, &Machine.events_since(&1, from, @batch), consistency: :stale) do
      {:ok, result} -> result
      error -> error
    end
  end

  @doc false
  def in_range?(key, {:key, key}), do: true
  def in_range?(_key, {:key, _}), do: false
  def in_range?(key, {:prefix, prefix}), do: String.starts_with?(key, prefix)
  def in_range?(key, {:range, from, :end}), do: key >= from
  def in_range?(key, {:range, from, to}), do: key >= from and key < to
end
