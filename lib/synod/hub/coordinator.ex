defmodule Synod.Hub.Coordinator do
  @moduledoc false
  # The hub's process on one node, registered under the hub's name. A shell:
  # it owns the registry tables, the monitors on peers and subscribers, and
  # the event queue, and carries out what the pure modules
  # decide (Synod.Hub.Placement for placement and redistribution,
  # Synod.Hub.Results on the caller's side). Every message it accepts is a
  # plain term listed in docs/protocol.md.
  #
  # It never waits on another node: requests are answered from local work
  # only, and remote answers arrive as messages. It keeps no state about
  # callers: a request is handled and forgotten in one step.
  #
  # Registry row (one per child, on every member):
  #   {child_id, spec, metadata, [pid]}   — one pid per member running a copy
  # A row with no pids is a child whose copies are gone (its node left, or it
  # is being migrated or suspended); its owner restarts it on reconcile.

  use GenServer
  require Logger

  alias Synod.Hub.{Children, EventQueue, Membership, Placement, Protocol, Registry, Stray}
  alias Synod.Ring

  @migration_timeout 30_000
  # How long a member that lost a peer's coordinator while the peer's node
  # stays connected waits for its successor (which adopts the children
  # there) before it counts the peer as gone; and how long a coordinator
  # that adopted waits for the members it knew to answer its hello.
  @peer_restart_grace 5_000
  # Tombstones (docs/hub.md, "Stops") are swept this often, and dropped once
  # this old while every member ever known is connected.
  @sweep_every 10_000
  @tomb_keep 60_000
  # A stop request finding a copy that a tombstone stopped this recently
  # answers with that copy (the request and the tombstone raced).
  @tomb_answer_window 5_000

  # ── lifecycle ────────────────────────────────────────────────────────────

  def start_link(cfg), do: GenServer.start_link(__MODULE__, cfg, name: cfg.name)

  def child_spec(cfg),
    do: %{id: __MODULE__, start: {__MODULE__, :start_link, [cfg]}, shutdown: 10_000}

  @impl true
  def init(cfg) do
    Process.flag(:trap_exit, true)
    Process.flag(:message_queue_data, :off_heap)
    hub = cfg.name
    sup = Process.whereis(Synod.Hub.Supervisor.children_name(hub))
    # The children's supervisor outlives this process: it holds the tables
    # of a predecessor that crashed, and every child that runs here.
    {token, tables, local} = Children.attach(sup)
    :ok = :net_kernel.monitor_nodes(true)

    state = %{
      hub: hub,
      cfg: cfg,
      me: node(),
      # What members must agree on, compared as a plain term in the handshake.
      hash:
        {cfg.replication_factor, cfg.replication_model,
         Keyword.get(cfg.ring, :vnodes, :synod_ring.default_vnodes()),
         Keyword.get(cfg.ring, :seed, :synod_ring.default_seed()), cfg.partition_strategy},
      sup: sup,
      token: token,
      registry: nil,
      meta: nil,
      # node => {coordinator pid, monitor}, or {nil, nil} while waiting for
      # a restarted coordinator (`restarting` holds its timer)
      peers: %{},
      restarting: %{},
      known: MapSet.new([node()]),
      ring: nil,
      partitioned: false,
      subs: %{},
      migrations: %{},
      migrating: MapSet.new(),
      queue: EventQueue.new(),
      # hybrid clock (µs): incarnations of starts, stamps of stops
      clock: 0,
      # whether any tombstone may exist (skips the lookups when not)
      tombs: false,
      # healed, waiting for a sync before reconciling (apply_membership/2)
      healing: false
    }

    Process.send_after(self(), {:synod_sweep, token}, @sweep_every)

    state =
      case tables do
        nil -> fresh(state)
        {registry, meta} -> adopt(state, registry, meta, local)
      end

    for node <- Node.list(), do: send({hub, node}, hello(state, :synod_hello))
    {:ok, state}
  end

  defp fresh(state) do
    heir = fn kind -> {:heir, state.sup, {:synod_table, kind}} end

    # :compressed keeps a row near 160 bytes (see docs/hub.md, "Memory").
    registry =
      :ets.new(:synod_registry, [
        :set,
        :protected,
        :compressed,
        heir.(:registry),
        read_concurrency: true
      ])

    meta = :ets.new(:synod_meta, [:set, :protected, heir.(:meta), read_concurrency: true])
    :ets.insert(meta, [{:config, state.cfg}, {:subs, %{}}])
    :persistent_term.put({Synod.Hub, state.hub}, {registry, meta})
    apply_membership(%{state | registry: registry, meta: meta}, nil)
  end

  # A predecessor crashed: its tables (which every reader kept using) and
  # the children running here are still there. The rows of this node are
  # rebuilt from the children; the other members' rows are kept until each
  # member's sync replaces them (add_peer/3). The members it knew are
  # awaited, not forgotten: the ring does not change, so nothing moves.
  defp adopt(state, registry, meta, local) do
    for {tab, kind} <- [{registry, :registry}, {meta, :meta}],
        do: :ets.setopts(tab, {:heir, state.sup, {:synod_table, kind}})

    adopt_local_rows(registry, state.me, local)
    {awaited, gone} = Membership.after_restart(meta_get(meta, :members), state.me, Node.list())

    subs =
      Map.new(meta_get(meta, :subs), fn {pid, {_, ids}} -> {pid, {Process.monitor(pid), ids}} end)

    state = %{
      state
      | registry: registry,
        meta: meta,
        known: meta_get(meta, :known),
        partitioned: meta_get(meta, :partitioned),
        ring: meta_get(meta, :ring),
        subs: subs,
        tombs: any_tombstones?(meta)
    }

    Logger.warning(
      "#{who(state)} restarted: adopted #{length(local)} children, waiting for #{length(awaited)} members"
    )

    state = Enum.reduce(awaited, state, &await_peer(&2, &1, :nodedown))

    # Members whose node went away meanwhile are gone (their children move).
    case gone do
      [] ->
        state

      gone ->
        Enum.each(gone, &drop_node_pids(registry, &1))
        state = Enum.reduce(gone, state, &emit(&2, :member_left, {&1, :nodedown}))
        apply_membership(state, state.ring)
    end
  end

  defp adopt_local_rows(registry, me, local) do
    running = Map.new(local, fn {id, pid, spec} -> {id, {pid, spec}} end)

    {changed, seen} =
      :ets.foldl(
        fn {id, spec, meta, pids} = row, {changed, seen} ->
          mine = local_pid(pids, me)

          case running do
            %{^id => {^mine, _}} ->
              {changed, [id | seen]}

            %{^id => {pid, _}} ->
              {[{id, spec, meta, [pid | List.delete(pids, mine)]} | changed], [id | seen]}

            _ when mine == nil ->
              {changed, seen}

            _ ->
              {[put_elem(row, 3, List.delete(pids, mine)) | changed], seen}
          end
        end,
        {[], []},
        registry
      )

    new = for {id, {pid, spec}} <- Map.drop(running, seen), do: {id, spec, nil, [pid]}
    :ets.insert(registry, changed ++ new)
  end

  defp meta_get(meta, key), do: :ets.lookup_element(meta, key, 2)

  # Only a hub that stops says goodbye: a coordinator that crashed is
  # restarted and adopts the children, and its peers wait for it.
  @impl true
  def terminate(reason, state) do
    if reason in [:normal, :shutdown] or match?({:shutdown, _}, reason) do
      for {node, _} <- state.peers, do: send({state.hub, node}, {:synod_bye, state.me})
      :persistent_term.erase({Synod.Hub, state.hub})
    end

    :ok
  end

  # ── calls (also the plain-term protocol for external callers) ───────────

  # Every call and message is checked against docs/protocol.md first: what
  # does not fit is stray input (answered or dropped, logged rate-limited),
  # never a crash halfway through handling it.
  @impl true
  def handle_call(request, from, state) do
    state = follow_node_name(state)
    Stray.call(request, from, state, who(state), Protocol.call?(request), &call/3)
  end

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, who(state))

  @impl true
  def handle_info(message, state) do
    state = follow_node_name(state)

    if Protocol.message?(message) do
      info(message, state)
    else
      Stray.ignored(who(state), :message, message)
      {:noreply, state}
    end
  end

  defp who(state), do: "Synod hub #{inspect(state.hub)} on #{state.me}"

  # A hub may start before its node is distributed (or see distribution
  # stop and start again): this node's name changes under it. Its own pids
  # already carry the new name; the ring, the members it has known and the
  # peers follow, and it says hello to the nodes now connected.
  defp follow_node_name(%{me: me} = state) do
    case node() do
      ^me ->
        state

      name ->
        known = Membership.rename(state.known, me, name)
        state = apply_membership(%{state | me: name, known: known}, state.ring)
        for node <- Node.list(), do: send({state.hub, node}, hello(state, :synod_hello))
        state
    end
  end

  defp call(:synod_barrier, _from, state), do: {:reply, :ok, state}

  defp call({:synod_dispatch_event, id, data, discard}, _from, state) do
    {answer, state} = enqueue_event(state, id, data, discard)
    {:reply, {:ok, answer}, state}
  end

  defp call({:synod_subscribe, pid, ids}, _from, state) do
    subs =
      case state.subs do
        %{^pid => {mref, _}} -> Map.put(state.subs, pid, {mref, ids})
        subs -> Map.put(subs, pid, {Process.monitor(pid), ids})
      end

    {:reply, :ok, put_subs(state, subs)}
  end

  defp call({:synod_unsubscribe, pid}, _from, state) do
    case Map.pop(state.subs, pid) do
      {nil, _} ->
        {:reply, :ok, state}

      {{mref, _}, subs} ->
        Process.demonitor(mref, [:flush])
        {:reply, :ok, put_subs(state, subs)}
    end
  end

  defp call({:start_children, entries}, _from, state) do
    {state, results} = handle_start(state, make_ref(), [], entries, [])
    {:reply, {:ok, results}, state}
  end

  defp call({:stop_children, ids}, _from, state) do
    {state, results} = handle_stop(state, make_ref(), [], ids, [])
    {:reply, {:ok, results}, state}
  end

  defp call(:members, _from, state), do: {:reply, {:ok, members(state)}, state}

  # The handshake's Config tuple, for non-members that place children (the
  # C node needs the replication model to tell each replica its mode).
  defp call(:config, _from, state), do: {:reply, {:ok, state.hash}, state}

  defp call(:ring_info, _from, state) do
    info = Ring.info(state.ring)
    {:reply, {:ok, members(state), info.vnodes, info.seed, state.cfg.replication_factor}, state}
  end

  # `[{id, [pid]}]` for the ids this node's registry holds (for callers on
  # client nodes, Synod.Hub.Caller).
  defp call({:synod_locate, ids}, _from, state) do
    found = for id <- ids, [{_, _, _, pids}] <- [:ets.lookup(state.registry, id)], do: {id, pids}
    {:reply, {:ok, found}, state}
  end

  defp call({:whereis, id}, _from, state) do
    pids =
      case :ets.lookup(state.registry, id) do
        [{_, _, _, pids}] -> pids
        [] -> []
      end

    {:reply, {:ok, pids}, state}
  end

  # ── requests ─────────────────────────────────────────────────────────────

  defp info({:synod_start, ref, reply_to, entries, opts}, state) do
    {state, _} = handle_start(state, ref, reply_to, entries, opts)
    after_batch(entries)
    {:noreply, state}
  end

  defp info({:synod_stop, ref, reply_to, ids, opts}, state) do
    {state, _} = handle_stop(state, ref, reply_to, ids, opts)
    after_batch(ids)
    {:noreply, state}
  end

  # ── registry sync between members ────────────────────────────────────────

  defp info({:synod_registered, from, entries, replies}, state) do
    if Map.has_key?(state.peers, from) do
      entries = live(state, entries)
      rows = put_pids(state.registry, entries)
      deliver_replies(replies, from)
      state = emit_started(state, from, entries)
      state = reconcile(state, rows, nil)
      after_batch(entries)
      {:noreply, state}
    else
      deliver_replies(replies, from)
      {:noreply, state}
    end
  end

  defp info({:synod_sync, from, entries, orphans, tombstones}, state) do
    if Map.has_key?(state.peers, from) do
      state = apply_tombstones(state, tombstones)
      {:noreply, apply_sync(state, from, live(state, entries), live(state, orphans))}
    else
      {:noreply, state}
    end
  end

  defp info({:synod_tombstones, from, tombstones}, state) do
    if Map.has_key?(state.peers, from),
      do: {:noreply, apply_tombstones(state, tombstones)},
      else: {:noreply, state}
  end

  defp info({:synod_sweep, token}, %{token: token} = state) do
    Process.send_after(self(), {:synod_sweep, token}, @sweep_every)
    {:noreply, sweep_tombstones(state)}
  end

  defp info({:synod_orphans, from, orphans}, state) do
    if Map.has_key?(state.peers, from) do
      {:noreply, reconcile(state, add_orphans(state.registry, live(state, orphans)), nil)}
    else
      {:noreply, state}
    end
  end

  defp info({:synod_unregistered, from, stopped, reason, replies}, state) do
    state =
      if Map.has_key?(state.peers, from) do
        rows =
          for {id, pid} <- stopped, row = remove_pid(state.registry, id, pid, reason), do: row

        state = if stopped != [], do: emit(state, :children_stopped, {from, stopped}), else: state

        case reason do
          # A stop request: the child is stopped everywhere, for good.
          {:stopped, t} -> apply_tombstones(state, for({id, _} <- stopped, do: {id, t}))
          # The other copies of a child that exited are going too: an owner
          # must not restart it.
          :stopped -> state
          # A copy that moves or is suspended must run again somewhere: every
          # member looks at the row again, as for any other change to it.
          _ -> reconcile(state, rows, nil)
        end
      else
        state
      end

    deliver_replies(replies, from)
    {:noreply, state}
  end

  # ── membership ───────────────────────────────────────────────────────────

  # (A coordinator never counts itself: a hello it sent to its own node's
  # name before distribution came up may come back to it.)
  defp info({tag, node, _pid, _hash}, %{me: node} = state)
       when tag in [:synod_hello, :synod_welcome],
       do: {:noreply, state}

  defp info({:synod_hello, node, pid, hash}, state) do
    if hash == state.hash do
      send(pid, hello(state, :synod_welcome))
      {:noreply, add_peer(state, node, pid)}
    else
      Stray.warn("#{who(state)}: #{node} runs it with a different configuration; ignored")

      {:noreply, state}
    end
  end

  defp info({:synod_welcome, node, pid, hash}, state) do
    if hash == state.hash, do: {:noreply, add_peer(state, node, pid)}, else: {:noreply, state}
  end

  defp info({:synod_bye, node}, state) do
    state = %{state | known: MapSet.delete(state.known, node)}
    {:noreply, remove_peer(state, node, :hub_stopped)}
  end

  defp info({:nodeup, node}, state) do
    send({state.hub, node}, hello(state, :synod_hello))
    {:noreply, state}
  end

  defp info({:nodedown, node}, state), do: {:noreply, remove_peer(state, node, :nodedown)}

  defp info({:DOWN, mref, :process, pid, reason}, state) do
    cond do
      match?(%{^pid => {^mref, _}}, state.subs) ->
        {:noreply, put_subs(state, Map.delete(state.subs, pid))}

      true ->
        case Enum.find(state.peers, fn {_, {p, m}} -> p == pid and m == mref end) do
          {node, _} -> {:noreply, peer_down(state, node, reason)}
          nil -> {:noreply, state}
        end
    end
  end

  defp info({:synod_peer_timeout, ref}, state) do
    case Enum.find(state.restarting, fn {_, {r, _}} -> r == ref end) do
      {node, {_, why}} -> {:noreply, remove_peer(state, node, why)}
      nil -> {:noreply, state}
    end
  end

  # Tables handed over by the children's supervisor (adopt/4).
  defp info({:"ETS-TRANSFER", _tab, _from, :synod_adopted}, state), do: {:noreply, state}

  # ── children of this node ────────────────────────────────────────────────

  # An exit this node's supervisor (Synod.Hub.Children) did not ask for:
  # with a new pid when it restarted the child, nil when it did not. An exit
  # of a pid the registry no longer names as this node's copy (the
  # coordinator stopped or replaced it since) changes nothing.
  defp info({:synod_child_exit, token, id, pid, _reason, new_pid}, %{token: token} = state) do
    case :ets.lookup(state.registry, id) do
      [{_, _, _, pids} = row] ->
        if local_pid(pids, state.me) == pid,
          do: {:noreply, child_exited(state, row, pid, new_pid)},
          else: {:noreply, state}

      [] ->
        {:noreply, state}
    end
  end

  # ── migrations started by this node ──────────────────────────────────────

  defp info({:synod_results, ref, target, results}, state) do
    case Map.pop(state.migrations, ref) do
      {nil, _} ->
        {:noreply, state}

      {%{kind: :cold, timer: timer}, migrations} ->
        Process.cancel_timer(timer)
        moved = for {id, {:ok, pid}} <- results, do: {id, pid}
        log_failed_moves(state, target, results)
        state = %{state | migrations: migrations}
        state = if moved != [], do: announce_migrated(state, target, moved), else: state
        {:noreply, maybe_resume(state)}

      {%{kind: :hot, timer: timer, old: old} = m, migrations} ->
        Process.cancel_timer(timer)
        log_failed_moves(state, target, results)

        moved =
          for {id, {:ok, pid}} <- results,
              Map.has_key?(old, id),
              do: {id, Map.fetch!(old, id), pid}

        coordinator = self()
        timeout = state.cfg.handover_timeout

        spawn(fn ->
          send(coordinator, {:synod_handover_done, ref, target, handover(moved, timeout)})
        end)

        {:noreply, %{state | migrations: Map.put(migrations, ref, %{m | kind: :handover})}}
    end
  end

  defp info({:synod_handover_done, ref, target, moved}, state) do
    case Map.pop(state.migrations, ref) do
      {nil, _} ->
        {:noreply, state}

      {%{ids: ids}, migrations} ->
        state = %{state | migrations: migrations}
        # The new copies run (and are registered) on `target`: stop the old.
        old_ids = for {id, _old, _new} <- moved, do: id
        {state, _results, stopped} = stop_local(state, old_ids, :migrating)
        broadcast_unregistered(state, stopped, :migrating, %{})
        # Children the target failed to start stay here; reconcile decides again.
        state = %{state | migrating: Enum.reduce(ids, state.migrating, &MapSet.delete(&2, &1))}
        state = announce_migrated(state, target, for({id, _old, new} <- moved, do: {id, new}))
        {:noreply, maybe_resume(state)}
    end
  end

  defp info({:synod_migration_timeout, ref}, state) do
    case Map.pop(state.migrations, ref) do
      {nil, _} ->
        {:noreply, state}

      {%{ids: ids}, migrations} ->
        Logger.warning(
          "Synod hub #{inspect(state.hub)}: a migration of #{length(ids)} children got no answer"
        )

        migrating = Enum.reduce(ids, state.migrating, &MapSet.delete(&2, &1))
        {:noreply, maybe_resume(%{state | migrations: migrations, migrating: migrating})}
    end
  end

  # ── events ───────────────────────────────────────────────────────────────

  defp info({:synod_event, id, data, discard}, state) do
    {_, state} = enqueue_event(state, id, data, discard)
    {:noreply, state}
  end

  # Well-formed, but not for this process (a notice with another token).
  defp info(message, state) do
    Stray.ignored(who(state), :message, message)
    {:noreply, state}
  end

  # ── starting and stopping ────────────────────────────────────────────────

  # A big batch leaves a big heap of garbage behind (the batch, the answers);
  # collect it now rather than carry it until the next natural collection.
  @big_batch 5_000
  defp after_batch(list) do
    if length(list) >= @big_batch, do: :erlang.garbage_collect()
    :ok
  end

  # A start from a client is a new incarnation of each child; one from a
  # member (`migration: true`) moves an existing one, refused as `:stopped`
  # when a stop came first.
  defp handle_start(state, ref, reply_to, entries, opts) do
    if state.partitioned do
      results = for {id, _, _, _} <- entries, do: {id, {:error, :partitioned}}
      route_replies(state, {ref, reply_to, opts}, results, [], :registered)
      {state, results}
    else
      kind = if :proplists.get_bool(:migration, opts), do: :member, else: :client
      {state, results, rows, started} = start_local(state, entries, kind)
      route_replies(state, {ref, reply_to, opts}, results, started, :registered)
      state = emit_started(state, state.me, started)
      # A requester with a stale ring may have sent us children we do not own.
      {reconcile(state, rows, nil), results}
    end
  end

  # A stop is recorded before anything else: a tombstone per id, stamped
  # now, which every member keeps and compares before it re-creates a row
  # or starts a copy (docs/hub.md, "Stops"). Ids with no copy here are
  # recorded too, and sent to every member, in case a copy is on its way.
  # A minority under :majority refuses, as it refuses starts.
  defp handle_stop(%{partitioned: true} = state, ref, reply_to, ids, opts) do
    results = for id <- ids, do: {id, {:error, :partitioned}}
    route_replies(state, {ref, reply_to, opts}, results, [], :unregistered)
    {state, results}
  end

  defp handle_stop(state, ref, reply_to, ids, opts) do
    {t, state} = tick(state)
    {state, results, stopped} = stop_local(state, ids, {:stopped, t})
    # A copy another member's tombstone stopped a moment ago counts as
    # stopped by this request (the other copies' stops travel faster).
    results = Enum.map(results, &stopped_by_tombstone(state, &1))
    state = put_tombstones(state, for(id <- ids, do: {id, t}), Map.new(ids, &{&1, nil}))
    absent = for {id, {:error, :not_found}} <- results, do: {id, t}

    if absent != [] do
      for {id, _} <- absent, do: :ets.delete(state.registry, id)

      for {node, _} <- state.peers,
          do: send({state.hub, node}, {:synod_tombstones, state.me, absent})
    end

    route_replies(state, {ref, reply_to, opts}, results, stopped, {:unregistered, {:stopped, t}})
    state = if stopped != [], do: emit(state, :children_stopped, {state.me, stopped}), else: state
    {state, results}
  end

  # Starts each entry on this node unless a copy already runs here, in which
  # case its pid is the answer (a node never runs two copies of a child).
  # Returns the answers in order, and for the children it started their rows
  # as now stored and their registry entries `{id, spec, meta, pid}`.
  # The starts themselves are one call to this node's supervisor.
  #
  # `kind` :client stamps each child with the request's incarnation (the
  # caller's, unless it is missing or not above a tombstone of the id: a
  # start after a stop is a new incarnation); :member keeps the
  # incarnation the entry carries and refuses a stopped one.
  defp start_local(state, entries, kind) do
    %{registry: registry, me: me} = state
    {now, state} = tick(state)

    # what runs already, and what to start (with the row's other copies)
    {plan, newest} =
      Enum.map_reduce(entries, 0, fn {id, spec, slot, mode}, newest ->
        inc = Registry.inc(slot)
        stopped = tombstone(state, id)

        others =
          case :ets.lookup(registry, id) do
            [] -> []
            [{_, _, _, pids}] -> pids
          end

        step =
          cond do
            kind == :member and stopped != nil and inc <= stopped ->
              {:stopped, id}

            local_pid(others, me) != nil ->
              {:running, id, local_pid(others, me)}

            kind == :client and (inc == 0 or (stopped != nil and inc <= stopped)) ->
              {:start, id, spec, Registry.with_inc(slot, now), mode, others}

            true ->
              {:start, id, spec, slot, mode, others}
          end

        {step, max(newest, inc)}
      end)

    answers =
      Children.start_batch(state.sup, for({:start, id, spec, _, _, _} <- plan, do: {id, spec}))

    {results, rows, started} = merge_starts(plan, answers, state, [], [], [])
    :ets.insert(registry, rows)
    {observe(state, newest), results, rows, started}
  end

  defp merge_starts([{:running, id, pid} | plan], answers, state, results, rows, started),
    do: merge_starts(plan, answers, state, [{id, {:ok, pid}} | results], rows, started)

  defp merge_starts([{:stopped, id} | plan], answers, state, results, rows, started),
    do: merge_starts(plan, answers, state, [{id, {:error, :stopped}} | results], rows, started)

  defp merge_starts(
         [{:start, id, spec, meta, mode, others} | plan],
         [{id, answer} | answers],
         state,
         results,
         rows,
         started
       ) do
    case answer do
      {:ok, pid} ->
        row = {id, spec, meta, [pid | others]}
        tell_mode(state, pid, mode)
        results = [{id, answer} | results]

        merge_starts(plan, answers, state, results, [row | rows], [
          {id, spec, meta, pid} | started
        ])

      {:error, _} ->
        merge_starts(plan, answers, state, [{id, answer} | results], rows, started)
    end
  end

  defp merge_starts([], [], _state, results, rows, started),
    do: {Enum.reverse(results), Enum.reverse(rows), Enum.reverse(started)}

  # This node's pid in a row's pid list, or nil.
  defp local_pid([pid | _], me) when node(pid) == me, do: pid
  defp local_pid([_ | pids], me), do: local_pid(pids, me)
  defp local_pid([], _me), do: nil

  defp tell_mode(%{cfg: %{replication_factor: 1}}, _pid, _mode), do: :ok
  defp tell_mode(state, pid, mode), do: send(pid, {:synod_mode, state.hub, mode})

  # Stops local copies. `reason` says what becomes of the row: a stop
  # request ({:stopped, t}) deletes it, :stopped deletes it once no copy is
  # left, :migrating and :suspended keep it (the child must run again
  # somewhere). The stops are
  # one call to this node's supervisor, which stops whichever incarnation
  # of each child runs now (a restart it has not told us about yet included).
  defp stop_local(state, ids, reason) do
    %{registry: registry, me: me} = state

    plan =
      for id <- ids do
        case :ets.lookup(registry, id) do
          [{_, spec, meta, pids}] ->
            case local_pid(pids, me) do
              nil -> {:absent, id}
              pid -> {:stop, id, spec, meta, pid, List.delete(pids, pid)}
            end

          [] ->
            {:absent, id}
        end
      end

    _ = Children.stop_batch(state.sup, for({:stop, id, _, _, _, _} <- plan, do: id))

    {results, stopped} =
      Enum.map_reduce(plan, [], fn
        {:absent, id}, stopped ->
          {{id, {:error, :not_found}}, stopped}

        {:stop, id, spec, meta, pid, rest}, stopped ->
          if keep_row?(reason, rest),
            do: :ets.insert(registry, {id, spec, meta, rest}),
            else: :ets.delete(registry, id)

          {{id, {:ok, pid}}, [{id, pid} | stopped]}
      end)

    {state, results, Enum.reverse(stopped)}
  end

  defp keep_row?({:stopped, _t}, _rest), do: false
  defp keep_row?(:stopped, rest), do: rest != []
  defp keep_row?(_moving, _rest), do: true

  # ── stops that hold: the clock and the tombstones ───────────────────────

  # A hybrid clock: microseconds, never backwards, and past every stamp
  # this node has seen, so a stop here is later than every start it knew.
  defp tick(state) do
    t = max(System.os_time(:microsecond), state.clock + 1)
    {t, %{state | clock: t}}
  end

  defp observe(state, t), do: if(t > state.clock, do: %{state | clock: t}, else: state)

  # Tombstones live in the meta table (so a restarted coordinator keeps
  # them) as {{:tomb, id}, t, recorded_at_ms, pid | nil}: the stamp of the
  # latest stop of `id`, and the local copy a tombstone stopped, if any.
  defp tombstone(state, id) do
    case tombstone_row(state, id) do
      {_, t, _, _} -> t
      nil -> nil
    end
  end

  defp tombstone_row(%{tombs: false}, _id), do: nil

  defp tombstone_row(state, id) do
    case :ets.lookup(state.meta, {:tomb, id}) do
      [row] -> row
      [] -> nil
    end
  end

  defp stopped_by_tombstone(state, {id, {:error, :not_found}} = result) do
    now = System.monotonic_time(:millisecond)

    case tombstone_row(state, id) do
      {_, _, at, pid} when is_pid(pid) and now - at < @tomb_answer_window -> {id, {:ok, pid}}
      _ -> result
    end
  end

  defp stopped_by_tombstone(_state, result), do: result

  defp any_tombstones?(meta),
    do: :ets.select(meta, [{{{:tomb, :_}, :_, :_, :_}, [], [true]}], 1) != :"$end_of_table"

  defp tombstones(meta),
    do: :ets.select(meta, [{{{:tomb, :"$1"}, :"$2", :_, :_}, [], [{{:"$1", :"$2"}}]}])

  # Records `[{id, t}]`, keeping the later stamp of each id, and for the ids
  # in `stopped` (`%{id => pid | nil}`) the local copy these tombstones
  # stopped (nil: none); other ids keep what was recorded.
  defp put_tombstones(state, [], _stopped), do: state

  defp put_tombstones(state, tombstones, stopped) do
    now = System.monotonic_time(:millisecond)

    rows =
      for {id, t} <- tombstones,
          row <- [tombstone_row(state, id)],
          row == nil or elem(row, 1) < t or is_map_key(stopped, id) do
        pid = Map.get(stopped, id, row && elem(row, 3))
        {{:tomb, id}, max(t, (row && elem(row, 1)) || t), now, pid}
      end

    :ets.insert(state.meta, rows)
    newest = Enum.reduce(tombstones, 0, fn {_, t}, acc -> max(t, acc) end)
    observe(%{state | tombs: true}, newest)
  end

  # Entries, orphans or rows whose incarnation a tombstone covers are
  # stopped children: dropped.
  defp live(%{tombs: false}, list), do: list

  defp live(state, list) do
    Enum.reject(list, fn item ->
      stopped = tombstone(state, elem(item, 0))
      stopped != nil and Registry.inc(elem(item, 2)) <= stopped
    end)
  end

  # Tombstones from another member: recorded, and every copy here and row
  # they cover goes (a copy whose stop request never came here included).
  defp apply_tombstones(state, []), do: state

  defp apply_tombstones(state, tombstones) do
    covered =
      for {id, t} <- tombstones,
          [{_, _, slot, pids}] <- [:ets.lookup(state.registry, id)],
          Registry.inc(slot) <= t,
          do: {id, local_pid(pids, state.me)}

    doomed = for {id, pid} <- covered, pid != nil, do: id
    {state, _results, stopped} = stop_local(state, doomed, :stopped)
    state = put_tombstones(state, tombstones, Map.new(stopped))
    for {id, _} <- covered, do: :ets.delete(state.registry, id)
    broadcast_unregistered(state, stopped, :stopped, %{})
    if stopped != [], do: emit(state, :children_stopped, {state.me, stopped}), else: state
  end

  # Tombstones are dropped once old, and only while every member this node
  # has known is connected: a member cut off may still hold a copy or a row
  # that its tombstone must meet when it comes back.
  defp sweep_tombstones(%{tombs: false} = state), do: state

  defp sweep_tombstones(state) do
    if Membership.complete?(state.known, state.peers, state.restarting) do
      cutoff = System.monotonic_time(:millisecond) - @tomb_keep

      :ets.select_delete(state.meta, [
        {{{:tomb, :_}, :_, :"$1", :_}, [{:<, :"$1", cutoff}], [true]}
      ])

      %{state | tombs: any_tombstones?(state.meta)}
    else
      state
    end
  end

  # A local child exited by itself: restarted under `new_pid`, or gone.
  defp child_exited(state, {id, spec, meta, pids}, old_pid, new_pid) when is_pid(new_pid) do
    %{cfg: cfg, ring: ring, me: me} = state
    :ets.insert(state.registry, {id, spec, meta, [new_pid | List.delete(pids, old_pid)]})
    owners = Placement.owners(ring, cfg.replication_factor, id)
    tell_mode(state, new_pid, Placement.mode(cfg.replication_model, owners, me))
    broadcast_registered(state, [{id, spec, meta, new_pid}], %{})
    emit(state, :children_started, {me, [{id, new_pid}]})
  end

  defp child_exited(state, {id, _, _, _}, old_pid, nil) do
    remove_pid(state.registry, id, old_pid, :stopped)
    broadcast_unregistered(state, [{id, old_pid}], :stopped, %{})
    emit(state, :children_stopped, {state.me, [{id, old_pid}]})
  end

  # ── replies and registry broadcasts ──────────────────────────────────────

  # Respondents on a peer get their answer through that peer's coordinator,
  # after it has applied the registry change (so a caller that has its
  # answer sees the child in its own node's registry). Respondents on other
  # nodes get it through the request's relay (`relay: node` in its options,
  # a client node's member) when that is a peer, else directly, as do those
  # on this node.
  defp route_replies(state, {ref, reply_to, opts}, results, changes, kind) do
    relay = :proplists.get_value(:relay, opts)

    via =
      Enum.group_by(reply_to, fn pid ->
        cond do
          node(pid) == state.me -> nil
          Map.has_key?(state.peers, node(pid)) -> node(pid)
          relay != state.me and is_map_key(state.peers, relay) -> relay
          true -> nil
        end
      end)

    {direct, via_peer} = Map.pop(via, nil, [])
    for pid <- direct, do: send(pid, {:synod_results, ref, state.me, results})
    replies = Map.new(via_peer, fn {node, pids} -> {node, [{ref, pids, results}]} end)

    case kind do
      :registered -> broadcast_registered(state, changes, replies)
      :unregistered -> broadcast_unregistered(state, changes, :stopped, replies)
      {:unregistered, why} -> broadcast_unregistered(state, changes, why, replies)
    end
  end

  defp broadcast_registered(state, entries, replies) do
    for {node, _} <- state.peers do
      node_replies = Map.get(replies, node, [])

      if entries != [] or node_replies != [] do
        send({state.hub, node}, {:synod_registered, state.me, entries, node_replies})
      end
    end

    :ok
  end

  defp broadcast_unregistered(state, stopped, reason, replies) do
    for {node, _} <- state.peers do
      node_replies = Map.get(replies, node, [])

      if stopped != [] or node_replies != [] do
        send({state.hub, node}, {:synod_unregistered, state.me, stopped, reason, node_replies})
      end
    end

    :ok
  end

  defp deliver_replies(replies, from) do
    for {ref, pids, results} <- replies,
        pid <- pids,
        do: send(pid, {:synod_results, ref, from, results})

    :ok
  end

  # A peer's full picture (send_sync/2): what it runs replaces whatever this
  # node believed runs there, and its rows without a copy are added when
  # missing. Rows changed either way are reconciled; rows left with no copy
  # (the peer's coordinator restarted without its children) also go to
  # their owners as orphans.
  defp apply_sync(state, from, entries, orphans) do
    %{registry: registry} = state
    announced = Map.new(entries, fn {id, _, _, pid} -> {id, pid} end)

    # rows naming a copy on `from` that it no longer runs; copies it runs
    # that this node knew already (after a restart: most of them)
    {stale, known} =
      :ets.foldl(
        fn {id, spec, meta, pids}, {stale, known} ->
          case Enum.find(pids, &(node(&1) == from)) do
            nil -> {stale, known}
            pid when :erlang.map_get(id, announced) == pid -> {stale, [id | known]}
            pid -> {[{id, spec, meta, List.delete(pids, pid)} | stale], known}
          end
        end,
        {[], []},
        registry
      )

    :ets.insert(registry, stale)
    rows = put_pids(registry, entries)
    added = add_orphans(registry, orphans)
    known = Map.from_keys(known, true)
    state = emit_started(state, from, Enum.reject(entries, &is_map_key(known, elem(&1, 0))))
    state = reconcile(state, stale ++ rows ++ added, nil)
    if Enum.any?(stale, &(elem(&1, 3) == [])), do: send_orphans(state)
    after_batch(entries)
    finish_heal(state)
  end

  defp add_orphans(registry, orphans) do
    for {id, spec, meta} <- orphans,
        :ets.insert_new(registry, {id, spec, meta, []}),
        do: {id, spec, meta, []}
  end

  # Records each `{id, spec, meta, pid}` as the copy of `id` on the pid's
  # node; returns the rows as now stored. Usually every row is new (a batch
  # another member just started): then one table call stores them all.
  defp put_pids(registry, entries) do
    rows = for {id, spec, meta, pid} <- entries, do: {id, spec, meta, [pid]}

    if :ets.insert_new(registry, rows),
      do: rows,
      else: for({id, spec, meta, pid} <- entries, do: put_pid(registry, id, spec, meta, pid))
  end

  # Records `pid` as the copy of `id` on its node; returns the new row.
  defp put_pid(registry, id, spec, meta, pid) do
    row =
      case :ets.lookup(registry, id) do
        [] ->
          {id, spec, meta, [pid]}

        [{_, _, _, pids}] ->
          node = node(pid)
          {id, spec, meta, [pid | Enum.reject(pids, &(node(&1) == node))]}
      end

    :ets.insert(registry, row)
    row
  end

  # Removes `pid` from the row of `id`; returns the row as now stored (nil
  # when there is none). `reason` :stopped deletes a row left without pids.
  defp remove_pid(registry, id, pid, reason) do
    case :ets.lookup(registry, id) do
      [{_, spec, meta, pids} = row] ->
        case List.delete(pids, pid) do
          [] when reason == :stopped ->
            :ets.delete(registry, id)
            nil

          ^pids ->
            row

          rest ->
            row = {id, spec, meta, rest}
            :ets.insert(registry, row)
            row
        end

      [] ->
        nil
    end
  end

  defp local_copy(state, id) do
    case :ets.lookup(state.registry, id) do
      [{_, _, _, pids}] -> local_pid(pids, state.me)
      [] -> nil
    end
  end

  defp local_entries(state) do
    me = state.me

    :ets.foldl(
      fn {id, spec, meta, pids}, acc ->
        case local_pid(pids, me) do
          nil -> acc
          pid -> [{id, spec, meta, pid} | acc]
        end
      end,
      [],
      state.registry
    )
  end

  # ── membership ───────────────────────────────────────────────────────────

  defp hello(state, tag), do: {tag, state.me, self(), state.hash}

  defp members(state), do: Enum.sort([state.me | Map.keys(state.peers)])

  defp add_peer(state, node, pid) do
    case state.peers do
      %{^node => {^pid, _}} ->
        state

      %{^node => {_old, mref}} ->
        # A new coordinator of a member we still count (its predecessor
        # crashed, or this one did and awaits it): it runs the same children
        # or has adopted them, so the ring stays; its sync says what runs there.
        if mref, do: Process.demonitor(mref, [:flush])

        state = %{
          state
          | peers: Map.put(state.peers, node, {pid, Process.monitor(pid)}),
            restarting: Map.delete(state.restarting, node)
        }

        send_sync(state, node)
        state

      _ ->
        old_ring = state.ring

        state = %{
          state
          | peers: Map.put(state.peers, node, {pid, Process.monitor(pid)}),
            known: MapSet.put(state.known, node)
        }

        send_sync(state, node)
        state = emit(state, :member_joined, node)
        apply_membership(state, old_ring)
    end
  end

  # Everything sent to a peer after it follows this full picture: the
  # children running here (the receiver replaces whatever it believed runs
  # here), and the children running nowhere (their copies are gone and the
  # peer may be the owner that must restart them).
  defp send_sync(state, node),
    do:
      send(
        {state.hub, node},
        {:synod_sync, state.me, local_entries(state), orphans(state), tombstones(state.meta)}
      )

  # The monitor on a peer's coordinator fired. A node that is gone is gone;
  # a coordinator that died on a node still connected is being restarted by
  # its supervisor and adopts its children: wait for it a while.
  defp peer_down(state, node, reason) do
    case Membership.on_down(reason, node in Node.list()) do
      {:await, why} -> await_peer(state, node, why)
      {:remove, why} -> remove_peer(state, node, why)
    end
  end

  defp await_peer(state, node, why) do
    ref = make_ref()
    Process.send_after(self(), {:synod_peer_timeout, ref}, @peer_restart_grace)

    %{
      state
      | peers: Map.put(state.peers, node, {nil, nil}),
        restarting: Map.put(state.restarting, node, {ref, why})
    }
  end

  defp put_subs(state, subs) do
    :ets.insert(state.meta, {:subs, subs})
    %{state | subs: subs}
  end

  defp remove_peer(state, node, reason) do
    case Map.pop(state.peers, node) do
      {nil, _} ->
        state

      {{_pid, mref}, peers} ->
        if mref, do: Process.demonitor(mref, [:flush])
        old_ring = state.ring

        state =
          %{state | peers: peers, restarting: Map.delete(state.restarting, node)}
          |> cancel_migrations_to(node)

        drop_node_pids(state.registry, node)
        state = emit(state, :member_left, {node, reason})
        state = state |> apply_membership(old_ring) |> finish_heal()
        send_orphans(state)
        state
    end
  end

  defp drop_node_pids(registry, node) do
    changed =
      :ets.foldl(
        fn {id, spec, meta, pids}, acc ->
          case Enum.reject(pids, &(node(&1) == node)) do
            ^pids -> acc
            rest -> [{id, spec, meta, rest} | acc]
          end
        end,
        [],
        registry
      )

    :ets.insert(registry, changed)
  end

  # Rows with no copy anywhere, as `{id, spec, meta}`.
  defp orphans(state),
    do: :ets.select(state.registry, [{{:"$1", :"$2", :"$3", []}, [], [{{:"$1", :"$2", :"$3"}}]}])

  # After a leave (and the reconcile that follows it, which started the
  # rows this node owns), the rows still without a copy go to their owners
  # as `synod_orphans`. An owner usually has them already (it then ignores
  # them), but not always: a member that joined while the leaving node was
  # still there may never have exchanged registries with it (nor with a
  # node that was moving a child to it), and then no other message would
  # ever tell it about those children; they would run nowhere
  # (docs/hub.md, "Churn").
  defp send_orphans(%{partitioned: true}), do: :ok

  defp send_orphans(state) do
    %{ring: ring, cfg: cfg, me: me} = state

    state
    |> orphans()
    |> Enum.reduce(%{}, fn {id, _, _} = orphan, acc ->
      for owner <- Placement.owners(ring, cfg.replication_factor, id),
          owner != me,
          reduce: acc,
          do: (acc -> Map.update(acc, owner, [orphan], &[orphan | &1]))
    end)
    |> Enum.each(fn {owner, orphans} ->
      send({state.hub, owner}, {:synod_orphans, me, orphans})
    end)
  end

  # Migrations to a member that left will not be answered: forget them now
  # (so the event queue resumes and hot-swapped children are reconciled
  # again with the new ring) instead of waiting for their timeout.
  defp cancel_migrations_to(state, node) do
    {gone, kept} = Enum.split_with(state.migrations, fn {_, m} -> Map.get(m, :target) == node end)

    if gone == [] do
      state
    else
      for {_, m} <- gone, do: Process.cancel_timer(m.timer)
      ids = Enum.flat_map(gone, fn {_, m} -> m.ids end)
      migrating = Enum.reduce(ids, state.migrating, &MapSet.delete(&2, &1))
      maybe_resume(%{state | migrations: Map.new(kept), migrating: migrating})
    end
  end

  # Rebuilds the ring for the current members, decides whether this side is
  # partitioned, and moves children to match the new ring.
  defp apply_membership(state, old_ring) do
    members = members(state)
    ring = Ring.new(members, state.cfg.ring)
    state = %{state | ring: ring}

    state =
      case Membership.transition(
             state.cfg.partition_strategy,
             members,
             state.known,
             state.partitioned
           ) do
        :suspend -> suspend(state)
        :heal -> heal(state)
        :none -> state
      end

    :ets.insert(state.meta, [
      {:members, members},
      {:ring, ring},
      {:partitioned, state.partitioned},
      {:known, state.known}
    ])

    # A side that heals by meeting the majority again waits for that
    # member's sync before it looks at its suspended rows: the sync brings
    # the stops made meanwhile (finish_heal/1).
    if state.partitioned or state.healing do
      state
    else
      reconcile(state, :ets.tab2list(state.registry), old_ring)
    end
  end

  defp finish_heal(%{healing: true} = state),
    do: reconcile(%{state | healing: false}, :ets.tab2list(state.registry), nil)

  defp finish_heal(state), do: state

  defp suspend(state) do
    ids = for {id, _, _, _} <- local_entries(state), do: id
    {state, _results, stopped} = stop_local(state, ids, :suspended)
    broadcast_unregistered(state, stopped, :suspended, %{})
    state = %{state | partitioned: true}
    :ets.insert(state.meta, {:partitioned, true})
    state = emit(state, :children_stopped, {state.me, stopped})
    emit(state, :partitioned, members(state))
  end

  defp heal(state) do
    state = %{state | partitioned: false, healing: true}
    :ets.insert(state.meta, {:partitioned, false})
    emit(state, :healed, members(state))
  end

  # ── redistribution ───────────────────────────────────────────────────────

  defp reconcile(%{partitioned: true} = state, _rows, _old_ring), do: state

  defp reconcile(state, rows, old_ring) do
    %{me: me, ring: ring, cfg: cfg, migrating: migrating} = state

    # Children being hot-swapped are decided when their swap is done.
    rows =
      if MapSet.size(migrating) == 0,
        do: rows,
        else: Enum.reject(rows, &MapSet.member?(migrating, elem(&1, 0)))

    {starts, migrations, stops} = Placement.reconcile_many(me, ring, cfg.replication_factor, rows)

    if old_ring, do: send_mode_changes(state, rows, old_ring)

    state
    |> stop_surplus(stops)
    |> start_missing(starts)
    |> migrate(migrations)
  end

  defp send_mode_changes(
         %{cfg: %{replication_model: :active_passive, replication_factor: rf}} = state,
         rows,
         old_ring
       )
       when rf > 1 do
    for {id, _, _, pids} <- rows do
      with pid when is_pid(pid) <- local_pid(pids, state.me),
           mode when mode != nil <-
             Placement.mode_change(state.me, :active_passive, rf, old_ring, state.ring, id) do
        send(pid, {:synod_mode, state.hub, mode})
      end
    end
  end

  defp send_mode_changes(_state, _rows, _old_ring), do: :ok

  defp stop_surplus(state, []), do: state

  defp stop_surplus(state, rows) do
    {state, _results, stopped} = stop_local(state, Enum.map(rows, &elem(&1, 0)), :migrating)
    broadcast_unregistered(state, stopped, :migrating, %{})
    emit(state, :children_stopped, {state.me, stopped})
  end

  defp start_missing(state, []), do: state

  defp start_missing(state, rows) do
    %{cfg: cfg, ring: ring, me: me} = state

    entries =
      for {id, spec, meta, _} <- rows do
        {id, spec, meta,
         Placement.mode(
           cfg.replication_model,
           Placement.owners(ring, cfg.replication_factor, id),
           me
         )}
      end

    {state, _results, _rows, started} = start_local(state, entries, :member)
    broadcast_registered(state, started, %{})
    emit_started(state, me, started)
  end

  defp migrate(state, migrations) when migrations == %{}, do: state

  defp migrate(state, migrations) do
    Enum.reduce(migrations, state, fn {target, rows}, state ->
      ref = make_ref()
      timer = Process.send_after(self(), {:synod_migration_timeout, ref}, @migration_timeout)
      %{cfg: cfg, ring: ring} = state
      owners = fn id -> Placement.owners(ring, cfg.replication_factor, id) end

      entries =
        for {id, spec, meta, _} <- rows,
            do: {id, spec, meta, Placement.mode(cfg.replication_model, owners.(id), target)}

      ids = Enum.map(rows, &elem(&1, 0))

      case cfg.migration do
        :cold ->
          {state, _results, stopped} = stop_local(state, ids, :migrating)
          broadcast_unregistered(state, stopped, :migrating, %{})
          send({state.hub, target}, {:synod_start, ref, [self()], entries, [migration: true]})

          %{
            state
            | migrations:
                Map.put(state.migrations, ref, %{
                  kind: :cold,
                  ids: ids,
                  target: target,
                  timer: timer
                })
          }

        :hot ->
          old = Map.new(ids, &{&1, local_copy(state, &1)})
          send({state.hub, target}, {:synod_start, ref, [self()], entries, [migration: true]})
          migrating = Enum.reduce(ids, state.migrating, &MapSet.put(&2, &1))
          m = %{kind: :hot, ids: ids, target: target, timer: timer, old: old}
          %{state | migrations: Map.put(state.migrations, ref, m), migrating: migrating}
      end
    end)
  end

  # Runs outside the coordinator: copies each old process's state into its
  # successor through the child module's optional handover/2 callback.
  defp handover(moved, timeout) do
    for {id, old_pid, new_pid} <- moved do
      try do
        old_state = :sys.get_state(old_pid, timeout)
        :sys.replace_state(new_pid, &Synod.Handover.merge(old_state, &1), timeout)
      catch
        kind, reason ->
          Logger.warning("Synod handover of #{inspect(id)} failed: #{inspect({kind, reason})}")
      end

      {id, old_pid, new_pid}
    end
  end

  defp log_failed_moves(state, target, results) do
    failed = for {id, {:error, reason}} <- results, do: {id, reason}

    if failed != [] do
      Logger.warning(
        "Synod hub #{inspect(state.hub)}: #{length(failed)} children failed to move to #{target}: #{inspect(Enum.take(failed, 3))}"
      )
    end
  end

  defp announce_migrated(state, target, moved) do
    data = {state.me, target, moved}

    for {node, _} <- state.peers do
      send({state.hub, node}, {:synod_event, :children_migrated, data, false})
    end

    emit(state, :children_migrated, data)
  end

  # ── the event queue (Synod.Hub.EventQueue decides) ─────────────────────

  defp enqueue_event(state, id, data, discard) do
    paused = state.migrations != %{}
    {queue, answer, effects} = EventQueue.dispatch(state.queue, paused, id, data, discard)
    {answer, deliver_all(%{state | queue: queue}, effects)}
  end

  defp emit(state, id, data) do
    {_, state} = enqueue_event(state, id, data, false)
    state
  end

  # Builds the (possibly large) event only when someone listens.
  defp emit_started(%{subs: subs} = state, _node, _entries) when subs == %{}, do: state
  defp emit_started(state, _node, []), do: state

  defp emit_started(state, node, entries),
    do: emit(state, :children_started, {node, for({id, _, _, pid} <- entries, do: {id, pid})})

  defp deliver_all(state, effects) do
    for {:deliver, id, data} <- effects,
        {pid, {_, ids}} <- state.subs,
        ids == :all or id in ids,
        do: send(pid, {:synod, state.hub, id, data})

    state
  end

  # The queue is paused exactly while migrations this node started are in
  # flight; resuming it delivers what was queued.
  defp maybe_resume(%{migrations: migrations} = state) when migrations != %{}, do: state

  defp maybe_resume(state) do
    {queue, effects} = EventQueue.resume(state.queue)
    deliver_all(%{state | queue: queue}, effects)
  end
end
