defmodule Synod.Store.Watcher do
  @moduledoc false
  # The store's watches on one member node. It subscribes to its member's
  # applied index (Synod.Raft.subscribe_applied/2) and reads change events
  # from the member's state (`Machine.events_since/3`, which follows the
  # committed order), sending each watch the events on its keys:
  #
  #   {:synod_watch, Ref, [Event]}                  in revision order, each once
  #   {:synod_watch, Ref, {:error, {:compacted, R}}} history gone; watch ends
  #
  # Ref is the caller's monitor on this process, so a watch whose node goes
  # away ends with {:DOWN, Ref, ...} and the caller can resume from the last
  # revision it saw. Watches of a caller that exits are dropped.
  #
  # Two sets of watches, so that one far behind never holds back the others:
  #
  #   * live: caught-up watches, which need nothing before `head`. One read
  #     from `head` per applied notification serves them all; `head` moves on.
  #   * behind: new watches, and those whose owner's distribution buffer
  #     was full. Each has its own cursor and they take turns, one bounded
  #     batch per `:catch_up` message, so applied notifications and calls
  #     are served between two batches. A watch whose read reached the end
  #     of the history joins the live set.
  #
  # Every handler does at most one read of at most @batch events (a revision
  # is never split) and never waits for a watch's owner: sends to other
  # nodes use :nosuspend, and a watch whose send would block goes back to the
  # behind set at the revision it did not get.

  use GenServer
  require Logger

  alias Synod.Store.Machine
  alias Synod.Stray
  alias Synod.Telemetry.Emit

  @batch 1_000

  def name(store), do: :"Synod.Store.Watcher.#{store}"

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts[:name], name: name(opts[:name]))

  @impl true
  def init(store) do
    :ok = Synod.Raft.subscribe_applied(store)

    {:ok,
     %{
       store: store,
       head: nil,
       live: %{},
       behind: %{},
       turns: :queue.new(),
       catching_up: false,
       pumping: false,
       owners: %{}
     }}
  end

  # Input from other nodes follows Synod.Stray: an unknown call (or a watch
  # of a range this process could not match keys against) is answered
  # {:error, {:bad_request, _}}, unknown casts and messages are dropped,
  # each logged at most once a second.
  @impl true
  def handle_call(request, from, state),
    do: Stray.call(request, from, state, who(state.store), known?(request), &call/3)

  defp known?({:watch, ref, pid, range, from}),
    do: is_reference(ref) and is_pid(pid) and is_integer(from) and from > 0 and range?(range)

  defp known?({:unwatch, ref}), do: is_reference(ref)
  defp known?(:pid), do: true
  defp known?(:status), do: true
  defp known?(_), do: false

  defp range?({:key, key}), do: is_binary(key)
  defp range?({:prefix, prefix}), do: is_binary(prefix)
  defp range?({:range, from, to}), do: is_binary(from) and (is_binary(to) or to == :end)
  defp range?(_), do: false

  # The name in Synod.Stray's log lines, built only when one is logged.
  defp who(name), do: fn -> "store #{inspect(name)} watcher" end

  defp call({:watch, ref, pid, range, from}, _from, state) do
    owners =
      if Map.has_key?(state.owners, pid),
        do: state.owners,
        else: Map.put(state.owners, pid, Process.monitor(pid))

    watch = %{pid: pid, range: range, next: from}
    state = %{state | owners: owners}

    # With no live watch, `head` is not known to be current: the watch finds
    # its place through one catch-up read.
    state =
      if map_size(state.live) > 0 and from >= state.head,
        do: %{state | live: Map.put(state.live, ref, watch)},
        else: put_behind(state, ref, watch)

    {:reply, :ok, state}
  end

  defp call({:unwatch, ref}, _from, state), do: {:reply, :ok, drop(state, [ref])}

  # Store.watch/3 from a node with no member of its own finds us here.
  defp call(:pid, _from, state), do: {:reply, {:ok, self()}, state}

  # Synod.status/0: how many watches, and how far behind the store's head.
  defp call(:status, _from, state) do
    {:reply,
     %{
       watches: map_size(state.live) + map_size(state.behind),
       behind: map_size(state.behind),
       lag: lag(state)
     }, state}
  end

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, who(state.store))

  @impl true
  def handle_info({:synod_raft_applied, _store, _index}, state), do: {:noreply, pump(state)}
  def handle_info(:pump, state), do: {:noreply, pump(%{state | pumping: false})}

  def handle_info(:catch_up, state) do
    state = catch_up(%{state | catching_up: false})
    Emit.watch_lag(state.store, lag(state))
    {:noreply, state}
  end

  def handle_info({:DOWN, _mref, :process, pid, _reason}, state) do
    refs = for {ref, %{pid: ^pid}} <- Map.merge(state.live, state.behind), do: ref
    {:noreply, %{drop(state, refs) | owners: Map.delete(state.owners, pid)}}
  end

  def handle_info(msg, state) do
    Stray.ignored(who(state.store), :message, msg)
    {:noreply, state}
  end

  # -- live watches -----------------------------------------------------------------

  defp pump(%{live: live} = state) when map_size(live) == 0, do: state

  defp pump(state) do
    case events(state.store, state.head) do
      {:ok, [], _next} ->
        state

      {:ok, events, next} ->
        {live, lagging} = send_all(state.live, events, next)
        state = %{state | live: live, head: next}
        state = Enum.reduce(lagging, state, fn {ref, w}, s -> put_behind(s, ref, w) end)
        if length(events) >= @batch, do: schedule_pump(state), else: state

      {:error, {:compacted, rev}} ->
        {gone, kept} = Enum.split_with(state.live, fn {_ref, w} -> w.next <= rev end)
        compacted(gone, rev)
        schedule_pump(%{state | live: Map.new(kept), head: rev + 1})

      {:error, why} ->
        Logger.debug("store #{state.store} watcher: events not read: #{inspect(why)}")
        state
    end
  end

  defp schedule_pump(%{pumping: true} = state), do: state

  defp schedule_pump(state) do
    send(self(), :pump)
    %{state | pumping: true}
  end

  # -- watches behind the head ---------------------------------------------------------

  defp put_behind(state, ref, watch) do
    schedule_catch_up(%{
      state
      | live: Map.delete(state.live, ref),
        behind: Map.put(state.behind, ref, watch),
        turns: :queue.in(ref, state.turns)
    })
  end

  defp schedule_catch_up(%{catching_up: true} = state), do: state

  defp schedule_catch_up(state) do
    send(self(), :catch_up)
    %{state | catching_up: true}
  end

  # One batch for the watch whose turn it is.
  defp catch_up(state) do
    case :queue.out(state.turns) do
      {:empty, _} ->
        state

      {{:value, ref}, turns} ->
        state = %{state | turns: turns}

        case Map.fetch(state.behind, ref) do
          {:ok, w} -> state |> catch_up_one(ref, w) |> schedule_catch_up_if_any()
          :error -> catch_up(state)
        end
    end
  end

  defp schedule_catch_up_if_any(state) do
    if :queue.is_empty(state.turns), do: state, else: schedule_catch_up(state)
  end

  defp catch_up_one(state, ref, w) do
    behind = Map.delete(state.behind, ref)

    case events(state.store, w.next) do
      {:ok, events, next} ->
        case send_events(ref, w, events, next) do
          {:ok, w} ->
            if length(events) < @batch and (map_size(state.live) == 0 or w.next >= state.head),
              do: join_live(%{state | behind: behind}, ref, w),
              else: %{state | behind: Map.put(behind, ref, w), turns: :queue.in(ref, state.turns)}

          {:busy, w} ->
            %{state | behind: Map.put(behind, ref, w), turns: :queue.in(ref, state.turns)}
        end

      {:error, {:compacted, rev}} ->
        compacted([{ref, w}], rev)
        %{state | behind: behind}

      {:error, why} ->
        Logger.debug("store #{state.store} watcher: events not read: #{inspect(why)}")
        %{state | turns: :queue.in(ref, state.turns)}
    end
  end

  defp join_live(%{live: live} = state, ref, w) when map_size(live) == 0,
    do: schedule_pump(%{state | head: w.next, live: %{ref => w}})

  defp join_live(state, ref, w), do: %{state | live: Map.put(state.live, ref, w)}

  # -- sending --------------------------------------------------------------------------

  # Sends every live watch its events of the batch; returns the watches that
  # got them and those whose send would have blocked (they go behind).
  defp send_all(live, events, next) do
    # A watch on one key takes its events from here, not from the whole batch.
    by_key = Enum.group_by(events, fn {_type, _rev, kv, _prev} -> kv.key end)

    Enum.reduce(live, {%{}, []}, fn {ref, w}, {ok, lagging} ->
      mine =
        case w.range do
          {:key, key} -> Map.get(by_key, key, [])
          _ -> events
        end

      case send_events(ref, w, mine, next) do
        {:ok, w} -> {Map.put(ok, ref, w), lagging}
        {:busy, w} -> {ok, [{ref, w} | lagging]}
      end
    end)
  end

  # {:ok, watch moved past the batch} or {:busy, watch unchanged}.
  defp send_events(ref, %{next: want} = w, events, next) do
    mine =
      for {_type, rev, kv, _prev} = event <- events,
          rev >= want and in_range?(kv.key, w.range),
          do: event

    case mine == [] or deliver(w.pid, {:synod_watch, ref, mine}) do
      :busy -> {:busy, w}
      _sent -> {:ok, %{w | next: max(want, next)}}
    end
  end

  # A send to another node whose distribution buffer is full would suspend
  # this process: refuse it instead and let the watch catch up later. A node
  # that is not connected any more: the owner's monitor ends the watch.
  defp deliver(pid, msg) when node(pid) == node(), do: send(pid, msg)

  defp deliver(pid, msg) do
    case :erlang.send(pid, msg, [:nosuspend, :noconnect]) do
      :nosuspend -> :busy
      _ -> :ok
    end
  end

  defp compacted(watches, rev) do
    for {ref, w} <- watches, do: send(w.pid, {:synod_watch, ref, {:error, {:compacted, rev}}})
  end

  defp drop(state, refs) do
    %{state | live: Map.drop(state.live, refs), behind: Map.drop(state.behind, refs)}
  end

  defp events(store, from) do
    case Synod.Raft.query(store, &Machine.events_since(&1, from, @batch), consistency: :stale) do
      {:ok, result} -> result
      error -> error
    end
  end

  # The events (revisions) the watches behind the head still have to get.
  defp lag(%{behind: behind}) when map_size(behind) == 0, do: 0

  defp lag(state) do
    case Synod.Raft.query(state.store, {Machine, :revision, []},
           consistency: :stale,
           timeout: 1_000
         ) do
      {:ok, rev} -> Enum.reduce(state.behind, 0, fn {_, w}, n -> n + max(rev + 1 - w.next, 0) end)
      _ -> 0
    end
  end

  @doc false
  def in_range?(key, {:key, key}), do: true
  def in_range?(_key, {:key, _}), do: false
  def in_range?(key, {:prefix, prefix}), do: String.starts_with?(key, prefix)
  def in_range?(key, {:range, from, :end}), do: key >= from
  def in_range?(key, {:range, from, to}), do: key >= from and key < to
end
