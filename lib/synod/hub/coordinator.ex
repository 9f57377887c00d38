defmodule Synod.Hub.Coordinator do
  @moduledoc false
  # The hub's process on one node, registered under the hub's name. A shell:
  # it owns the registry tables, the monitors on peers and subscribers, and
  # the event queue, routes each message to the pure modules
  # (Synod.Hub.Membership, Migrations, EventQueue, Events, Registry,
  # Placement, Replies, the strategies) and performs the effects they return
  # with one interpreter, perform/2 (docs/hub.md, "Structure: the shell and
  # its effects"). Every message it accepts is a plain term listed in
  # docs/protocol.md.
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

  alias Synod.Hub.{
    Announcements,
    Children,
    EventQueue,
    Events,
    Membership,
    Migrations,
    Placement,
    Protocol,
    Reconcile,
    Registry,
    Replies,
    Requests,
    Table,
    Stray,
    Tombstones
  }

  alias Synod.Ring

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
      # the moves this node started: the books of Synod.Hub.Migrations
      # (its two fields, kept flat here)
      migrations: %{},
      migrating: MapSet.new(),
      # {node, rows}: the rows the reconcile after `node`'s leave decides
      # (Table.drop_lost/4), kept from its {:drop_node, node} to its
      # {:reconcile, _, {:left, node}} effect
      lost: nil,
      queue: EventQueue.new(),
      # hybrid clock (µs): incarnations of starts, stamps of stops
      clock: 0,
      # false when no tombstone exists, else a stamp no tombstone here is
      # above: an incarnation above it is stopped by none, so the lookups
      # are skipped (a start after the stops it follows: docs/hub.md,
      # "Performance")
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
    apply_membership(%{state | registry: registry, meta: meta}, nil, :started)
  end

  # A predecessor crashed: its tables (which every reader kept using) and
  # the children running here are still there. The rows of this node are
  # rebuilt from the children; the other members' rows are kept until each
  # member's sync replaces them (add_peer/3). The members it knew are
  # awaited, not forgotten: the ring does not change, so nothing moves.
  defp adopt(state, registry, meta, local) do
    for {tab, kind} <- [{registry, :registry}, {meta, :meta}],
        do: :ets.setopts(tab, {:heir, state.sup, {:synod_table, kind}})

    Table.insert(registry, Registry.adopt(Table.rows(registry), state.me, local))
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
        tombs: tomb_bound(meta)
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
        Enum.each(gone, &Table.drop_node(registry, &1))
        state = Enum.reduce(gone, state, &emit(&2, :member_left, {&1, :nodedown}))
        apply_membership(state, state.ring, {:left, gone})
    end
  end

  defp meta_get(meta, key), do: :ets.lookup_element(meta, key, 2)

  # `tombs` for tombstones a predecessor left: their newest stamp
  defp tomb_bound(meta) do
    case Tombstones.all(meta) do
      [] -> false
      all -> all |> Enum.map(&elem(&1, 1)) |> Enum.max()
    end
  end

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
        state = apply_membership(%{state | me: name, known: known}, state.ring, :renamed)
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
    {:reply, {:ok, Table.locate(state.registry, ids)}, state}
  end

  defp call({:whereis, id}, _from, state),
    do: {:reply, {:ok, Table.pids(state.registry, id)}, state}

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

  # Announcements from peers: Synod.Hub.Announcements decides, given
  # whether the sender is a peer and the tombstones of the ids (read here).
  defp info({:synod_registered, from, entries, replies}, state) do
    peer? = Map.has_key?(state.peers, from)
    entries = if peer?, do: live(state, entries), else: entries
    state = perform(state, Announcements.registered(peer?, from, entries, replies))
    after_batch(entries)
    {:noreply, state}
  end

  defp info({:synod_sync, from, entries, orphans, tombstones}, state) do
    peer? = Map.has_key?(state.peers, from)
    {:noreply, perform(state, Announcements.sync(peer?, from, entries, orphans, tombstones))}
  end

  defp info({:synod_tombstones, from, tombstones}, state),
    do: {:noreply, perform(state, Announcements.tombstones(peer?(state, from), tombstones))}

  defp info({:synod_sweep, token}, %{token: token} = state) do
    Process.send_after(self(), {:synod_sweep, token}, @sweep_every)
    {:noreply, sweep_tombstones(state)}
  end

  defp info({:synod_orphans, from, orphans}, state) do
    peer? = peer?(state, from)
    orphans = if peer?, do: live(state, orphans), else: orphans
    {:noreply, perform(state, Announcements.orphans(peer?, orphans))}
  end

  defp info({:synod_unregistered, from, stopped, reason, replies}, state) do
    effects = Announcements.unregistered(peer?(state, from), from, stopped, reason, replies)
    {:noreply, perform(state, effects)}
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
    case Table.row(state.registry, id) do
      {_, _, _, pids} = row ->
        if Registry.local_pid(pids, state.me) == pid,
          do: {:noreply, child_exited(state, row, pid, new_pid)},
          else: {:noreply, state}

      nil ->
        {:noreply, state}
    end
  end

  # ── migrations started by this node ──────────────────────────────────────

  defp info({:synod_results, ref, target, results}, state),
    do: {:noreply, step_moves(state, &Migrations.answered(&1, ref, target, results, state.me))}

  defp info({:synod_handover_done, ref, target, moved}, state),
    do: {:noreply, step_moves(state, &Migrations.handed_over(&1, ref, target, moved, state.me))}

  defp info({:synod_migration_timeout, ref}, state),
    do: {:noreply, step_moves(state, &Migrations.timed_out(&1, ref))}

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
    request = {ref, reply_to, opts}

    case Requests.start(state.partitioned, request, entries) do
      {:refuse, results, effects} ->
        {perform(state, effects), results}

      {:start, kind} ->
        {state, results, rows, started} = start_local(state, entries, kind)
        {perform(state, Requests.started(request, state.me, results, rows, started)), results}
    end
  end

  # A stop is recorded before anything else: a tombstone per id, stamped
  # now, which every member keeps and compares before it re-creates a row
  # or starts a copy (docs/hub.md, "Stops"). Ids with no copy here are
  # recorded too, and sent to every member, in case a copy is on its way.
  # A minority under :majority refuses, as it refuses starts.
  defp handle_stop(state, ref, reply_to, ids, opts) do
    request = {ref, reply_to, opts}

    case Requests.stop(state.partitioned, request, ids) do
      {:refuse, results, effects} ->
        {perform(state, effects), results}

      :stop ->
        {t, state} = tick(state)
        {state, results, stopped} = stop_local(state, ids, {:stopped, t})
        # A copy another member's tombstone stopped a moment ago counts as
        # stopped by this request (the other copies' stops travel faster).
        now = System.monotonic_time(:millisecond)
        results = Requests.raced(results, raced(state, results), now, @tomb_answer_window)
        effects = Requests.stopped(request, state.me, ids, t, results, stopped)
        {perform(state, effects), results}
    end
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

    # the reads; Requests decides what runs already and what to start
    ids = for {id, _, _, _} <- entries, do: id

    {plan, newest} =
      Requests.plan_starts(kind, entries, rows_of(state, ids), stamps(state, entries), me, now)

    answers = Children.start_batch(state.sup, Requests.to_start(plan))
    {results, rows, started, modes} = Requests.merge_starts(plan, answers)
    for {pid, mode} <- modes, do: tell_mode(state, pid, mode)
    Table.insert(registry, rows)
    {observe(state, newest), results, rows, started}
  end

  # The row of each id (or nil), in order.
  defp rows_of(state, ids), do: for(id <- ids, do: Table.row(state.registry, id))

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
    plan = Requests.plan_stops(ids, rows_of(state, ids), me)
    _ = Children.stop_batch(state.sup, Requests.to_stop(plan))
    {results, stopped, puts, deletes} = Requests.merge_stops(plan, reason)
    Table.insert(registry, puts)
    for id <- deletes, do: :ets.delete(registry, id)
    {state, results, stopped}
  end

  # ── stops that hold: the clock and the tombstones (Synod.Hub.Tombstones) ─

  defp tick(state) do
    {t, clock} = Tombstones.tick(state.clock, System.os_time(:microsecond))
    {t, %{state | clock: clock}}
  end

  defp observe(state, t), do: %{state | clock: Tombstones.observe(state.clock, t)}

  # The stamp of the latest stop of `id` this node knows, or nil; nil
  # without looking when no tombstone can cover incarnation `inc`.
  defp tombstone(%{tombs: false}, _id, _inc), do: nil
  defp tombstone(%{tombs: bound}, _id, inc) when inc > bound, do: nil

  defp tombstone(state, id, _inc) do
    case Tombstones.lookup(state.meta, id) do
      {t, _at, _pid} -> t
      nil -> nil
    end
  end

  # The tombstones of the ids a stop found no copy of (Requests.raced/4).
  defp raced(%{tombs: false}, _results), do: %{}

  defp raced(state, results) do
    for {id, {:error, :not_found}} <- results,
        tomb = Tombstones.lookup(state.meta, id),
        into: %{},
        do: {id, tomb}
  end

  # Records `[{id, t}]`; `stopped` as in Tombstones.record/4.
  defp put_tombstones(state, [], _stopped), do: state

  defp put_tombstones(state, tombstones, stopped) do
    now = System.monotonic_time(:millisecond)
    :ok = Tombstones.record(state.meta, tombstones, stopped, now, state.tombs)
    newest = Tombstones.newest(tombstones)
    observe(%{state | tombs: max(state.tombs || 0, newest)}, newest)
  end

  # Entries, orphans or rows whose incarnation a tombstone covers are
  # stopped children: dropped (Announcements.live/2 decides, given the
  # tombstones read here).
  defp live(%{tombs: false}, list), do: list
  defp live(state, list), do: Announcements.live(list, stamps(state, list))

  defp stamps(state, list) do
    for item <- list,
        t = tombstone(state, elem(item, 0), Registry.inc(elem(item, 2))),
        into: %{},
        do: {elem(item, 0), t}
  end

  defp peer?(state, node), do: Map.has_key?(state.peers, node)

  # Tombstones from another member: recorded, and every copy here and row
  # they cover goes (a copy whose stop request never came here included).
  defp apply_tombstones(state, [], _rows), do: state

  # `rows`: `[{t, row}]`, the rows the ids of `tombstones` have (Table.with_rows/2).
  defp apply_tombstones(state, tombstones, rows) do
    {covered, doomed} = Requests.covered(rows, state.me)
    {state, _results, stopped} = stop_local(state, doomed, :stopped)
    perform(state, Requests.tombstones_applied(state.me, tombstones, covered, stopped))
  end

  # Tombstones are dropped once old, and only while every member this node
  # has known is connected: a member cut off may still hold a copy or a row
  # that its tombstone must meet when it comes back.
  defp sweep_tombstones(%{tombs: false} = state), do: state

  defp sweep_tombstones(state) do
    if Membership.complete?(state.known, state.peers, state.restarting) do
      Tombstones.sweep(state.meta, System.monotonic_time(:millisecond) - @tomb_keep)
      %{state | tombs: if(Tombstones.any?(state.meta), do: state.tombs, else: false)}
    else
      state
    end
  end

  # A local child exited by itself: restarted under `new_pid`, or gone
  # (Announcements.child_exited/5 decides, given its mode read here).
  defp child_exited(state, {id, _, _, _} = row, old_pid, new_pid) do
    %{cfg: cfg, ring: ring, me: me} = state
    owners = Placement.owners(ring, cfg.replication_factor, id)
    mode = Placement.mode(cfg.replication_model, owners, me)
    perform(state, Announcements.child_exited(me, row, old_pid, new_pid, mode))
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

    {direct, via_peer} = Replies.route(reply_to, state.me, state.peers, relay)
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
  # missing (the reads and writes here, Requests.synced/6 decides the rest).
  defp compare_sync(state, from, entries, orphans) do
    %{registry: registry} = state
    entries = live(state, entries)
    announced = Map.new(entries, fn {id, _, _, pid} -> {id, pid} end)

    # rows naming a copy on `from` that it no longer runs; copies it runs
    # that this node knew already (after a restart: most of them)
    {stale, known} = Table.against_sync(registry, from, announced)

    Table.insert(registry, stale)
    rows = Table.put_pids(registry, entries)
    added = Table.add_orphans(registry, live(state, orphans))
    state = perform(state, Requests.synced(from, entries, stale, rows, added, known))
    after_batch(entries)
    state
  end

  # ── membership ───────────────────────────────────────────────────────────

  defp hello(state, tag), do: {tag, state.me, self(), state.hash}

  defp members(state), do: Enum.sort([state.me | Map.keys(state.peers)])

  defp add_peer(state, node, pid), do: perform(state, Membership.hello(state.peers, node, pid))

  # Everything sent to a peer after it follows this full picture: the
  # children running here (the receiver replaces whatever it believed runs
  # here), and the children running nowhere (their copies are gone and the
  # peer may be the owner that must restart them).
  defp send_sync(state, node),
    do:
      send(
        {state.hub, node},
        {:synod_sync, state.me, Table.local_entries(state.registry, state.me),
         Table.orphans(state.registry), Tombstones.all(state.meta)}
      )

  # The monitor on a peer's coordinator fired. A node that is gone is gone;
  # a coordinator that died on a node still connected is being restarted by
  # its supervisor and adopts its children: wait for it a while.
  defp peer_down(state, node, reason),
    do: perform(state, Membership.down(state.peers, node, reason, node in Node.list()))

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

  defp remove_peer(state, node, reason),
    do: perform(state, Membership.leave(state.peers, node, reason))

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

    Placement.by_owner(ring, cfg.replication_factor, me, Table.orphans(state.registry))
    |> Enum.each(fn {owner, orphans} ->
      send({state.hub, owner}, {:synod_orphans, me, orphans})
    end)
  end

  # Migrations to a member that left will not be answered: forget them now
  # (so the event queue resumes and hot-swapped children are reconciled
  # again with the new ring) instead of waiting for their timeout.
  defp cancel_migrations_to(state, node),
    do: step_moves(state, &Migrations.cancel_to(&1, node))

  # Rebuilds the ring for the current members; Membership decides whether
  # this side is partitioned and whether children move to match the new
  # ring (`reason` says why, for the redistribution event).
  defp apply_membership(state, old_ring, reason) do
    members = members(state)
    ring = Ring.new(members, state.cfg.ring)

    {{partitioned, healing}, effects} =
      Membership.on_change(
        state.cfg.partition_strategy,
        members,
        state.known,
        {state.partitioned, state.healing},
        old_ring,
        reason
      )

    state = %{state | ring: ring, partitioned: partitioned, healing: healing}

    :ets.insert(state.meta, [
      {:members, members},
      {:ring, ring},
      {:partitioned, partitioned},
      {:known, state.known}
    ])

    perform(state, effects)
  end

  defp finish_heal(state) do
    {healing, effects} = Membership.synced(state.healing)
    perform(%{state | healing: healing}, effects)
  end

  # ── redistribution ───────────────────────────────────────────────────────

  defp reconcile(state, rows, old_ring), do: state |> reconcile_counted(rows, old_ring) |> elem(0)

  # Also returns how many children it started, stopped or sent away here
  # (Synod.Hub.Reconcile decides, the effects are performed here).
  defp reconcile_counted(state, rows, old_ring) do
    %{cfg: cfg} = state

    ctx = %{
      me: state.me,
      ring: state.ring,
      rf: cfg.replication_factor,
      model: cfg.replication_model,
      migration: cfg.migration,
      migrating: state.migrating
    }

    {moved, effects} = Reconcile.rows(ctx, state.partitioned, rows, old_ring)
    {perform(state, effects), moved}
  end

  defp stop_surplus(state, ids) do
    {state, _results, stopped} = stop_local(state, ids, :migrating)
    broadcast_unregistered(state, stopped, :migrating, %{})
    emit(state, :children_stopped, {state.me, stopped})
  end

  defp start_missing(state, entries) do
    {state, _results, _rows, started} = start_local(state, entries, :member)
    broadcast_registered(state, started, %{})
    emit_started(state, state.me, started)
  end

  # A move begins (Synod.Hub.Migrations), with the old copies it hands
  # over from (read here) unless it stops them first.
  defp migrate(state, target, plan, entries) do
    ids = for {id, _, _, _} <- entries, do: id

    old =
      if plan == :stop_then_start,
        do: %{},
        else: Map.new(ids, &{&1, Table.local_copy(state.registry, &1, state.me)})

    step_moves(state, &Migrations.begin(&1, make_ref(), plan, target, entries, old))
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

  # ── the event queue (Synod.Hub.EventQueue decides) ─────────────────────

  defp enqueue_event(state, id, data, discard) do
    paused = state.migrations != %{}
    {queue, answer, effects} = EventQueue.dispatch(state.queue, paused, id, data, discard)
    {answer, deliver_all(%{state | queue: queue}, effects)}
  end

  # A hub event: its telemetry (Synod.Hub.Events), then the event queue.
  defp emit(state, id, data) do
    state = perform(state, Events.telemetry(state.hub, state.me, id, data))
    {_, state} = enqueue_event(state, id, data, false)
    state
  end

  # Builds the (possibly large) event only when someone listens.
  defp emit_started(state, _node, []), do: state

  defp emit_started(%{subs: subs} = state, node, entries) when subs == %{},
    do: perform(state, Events.children(state.hub, :started, node, length(entries)))

  defp emit_started(state, node, entries),
    do: emit(state, :children_started, {node, for({id, _, _, pid} <- entries, do: {id, pid})})

  defp deliver_all(state, effects) do
    for {:deliver, id, data} <- effects,
        {pid, {_, ids}} <- state.subs,
        ids == :all or id in ids,
        do: send(pid, {:synod, state.hub, id, data})

    state
  end

  defp resume_events(state) do
    {queue, effects} = EventQueue.resume(state.queue)
    deliver_all(%{state | queue: queue}, effects)
  end

  # ── effects ──────────────────────────────────────────────────────────────

  # One step of the moves' books (Synod.Hub.Migrations), its effects performed.
  defp step_moves(state, fun) do
    books = %Migrations{moves: state.migrations, migrating: state.migrating}
    {%Migrations{moves: moves, migrating: migrating}, effects} = fun.(books)
    perform(%{state | migrations: moves, migrating: migrating}, effects)
  end

  # The interpreter of what the pure modules decide: effects are plain
  # data, carried out in list order.
  defp perform(state, []), do: state
  defp perform(state, [effect | rest]), do: state |> perform_one(effect) |> perform(rest)

  # `perform/2`, with `rows` (`[{t, row}]`) the rows of the ids of its
  # `{:apply_tombstones, _}` as just stored (see `{:remove_copies, ...}`).
  defp perform_stored(state, [{:apply_tombstones, tombstones} | rest], rows),
    do: state |> apply_tombstones(tombstones, rows) |> perform(rest)

  defp perform_stored(state, [effect | rest], rows),
    do: state |> perform_one(effect) |> perform_stored(rest, rows)

  defp perform_stored(state, [], _rows), do: state

  defp perform_one(state, {:send, node, message}) do
    send({state.hub, node}, message)
    state
  end

  defp perform_one(state, {:broadcast, message}) do
    for {node, _} <- state.peers, do: send({state.hub, node}, message)
    state
  end

  defp perform_one(state, {:send_start, target, ref, entries}) do
    send({state.hub, target}, {:synod_start, ref, [self()], entries, [migration: true]})
    state
  end

  defp perform_one(state, {:reply, request, results, changes, kind}) do
    route_replies(state, request, results, changes, kind)
    state
  end

  defp perform_one(state, {:started_event, node, entries}), do: emit_started(state, node, entries)
  defp perform_one(state, {:reconcile_rows, rows}), do: reconcile(state, rows, nil)

  defp perform_one(state, {:put_tombstones, tombstones, stopped}),
    do: put_tombstones(state, tombstones, stopped)

  defp perform_one(state, {:delete_rows, ids}) do
    for id <- ids, do: :ets.delete(state.registry, id)
    state
  end

  defp perform_one(state, {:announce_stopped, stopped, reason}) do
    broadcast_unregistered(state, stopped, reason, %{})
    state
  end

  defp perform_one(state, {:stop_local, ids, reason}) do
    {state, _results, stopped} = stop_local(state, ids, reason)
    broadcast_unregistered(state, stopped, reason, %{})
    state
  end

  defp perform_one(state, {:timer, ms, message}) do
    Process.send_after(self(), message, ms)
    state
  end

  defp perform_one(state, {:handover, ref, target, moved}) do
    coordinator = self()
    timeout = state.cfg.handover_timeout

    spawn(fn ->
      send(coordinator, {:synod_handover_done, ref, target, handover(moved, timeout)})
    end)

    state
  end

  defp perform_one(state, {:event, id, data}), do: emit(state, id, data)

  defp perform_one(state, {:telemetry, event, measurements, metadata}) do
    Synod.Telemetry.execute(event, measurements, metadata)
    state
  end

  defp perform_one(state, {:log, :warning, text}) do
    Logger.warning("#{who(state)}: #{text}")
    state
  end

  defp perform_one(state, :resume_events), do: resume_events(state)

  defp perform_one(state, {:stop_surplus, ids}), do: stop_surplus(state, ids)
  defp perform_one(state, {:start_missing, entries}), do: start_missing(state, entries)

  defp perform_one(state, {:migrate, target, plan, entries}),
    do: migrate(state, target, plan, entries)

  # Announcements (Synod.Hub.Announcements): the rows written here, the
  # rows as now stored fed back into its second step.
  defp perform_one(state, {:put_copies, from, entries, replies}) do
    rows = Table.put_pids(state.registry, entries)
    perform(state, Announcements.copies_put(from, entries, rows, replies))
  end

  # A stop request's copies (`{:stopped, t}`) are followed by their
  # tombstones, `{:apply_tombstones, _}` of the same ids, whose rows this
  # clause has just stored: those are given to it rather than read again.
  defp perform_one(state, {:remove_copies, from, stopped, reason, replies}) do
    rows = Table.remove_pids(state.registry, stopped, reason)
    effects = Announcements.copies_removed(from, stopped, reason, rows, replies)

    case reason do
      {:stopped, t} -> perform_stored(state, effects, for(row <- rows, do: {t, row}))
      _ -> perform(state, effects)
    end
  end

  defp perform_one(state, {:add_orphans, orphans}),
    do: perform(state, Announcements.orphans_added(Table.add_orphans(state.registry, orphans)))

  defp perform_one(state, {:apply_tombstones, tombstones}),
    do: apply_tombstones(state, tombstones, Table.with_rows(state.registry, tombstones))

  defp perform_one(state, {:compare_sync, from, entries, orphans}),
    do: compare_sync(state, from, entries, orphans)

  defp perform_one(state, {:deliver_replies, replies, from}) do
    deliver_replies(replies, from)
    state
  end

  defp perform_one(state, {:put_row, row}) do
    Table.insert(state.registry, row)
    state
  end

  defp perform_one(state, {:remove_copy, id, pid, reason}) do
    Table.remove_pid(state.registry, id, pid, reason)
    state
  end

  defp perform_one(state, {:tell_mode, pid, mode}) do
    tell_mode(state, pid, mode)
    state
  end

  defp perform_one(state, {:broadcast_registered, entries}) do
    broadcast_registered(state, entries, %{})
    state
  end

  defp perform_one(state, {:watch_peer, node, pid}) do
    case state.peers do
      %{^node => {_old, mref}} when mref != nil -> Process.demonitor(mref, [:flush])
      _ -> :ok
    end

    peers = Map.put(state.peers, node, {pid, Process.monitor(pid)})
    %{state | peers: peers, restarting: Map.delete(state.restarting, node)}
  end

  defp perform_one(state, {:unwatch_peer, node}) do
    {{_pid, mref}, peers} = Map.pop(state.peers, node)
    if mref, do: Process.demonitor(mref, [:flush])
    %{state | peers: peers, restarting: Map.delete(state.restarting, node)}
  end

  defp perform_one(state, {:await_peer, node, why}), do: await_peer(state, node, why)

  defp perform_one(state, {:know, node}), do: %{state | known: MapSet.put(state.known, node)}

  defp perform_one(state, {:sync, node}) do
    send_sync(state, node)
    state
  end

  defp perform_one(state, {:cancel_moves_to, node}), do: cancel_migrations_to(state, node)

  defp perform_one(state, {:drop_node, node}) do
    rows = Table.drop_lost(state.registry, node, state.me, state.cfg.replication_factor)
    %{state | lost: {node, rows}}
  end

  defp perform_one(state, {:membership, reason}), do: apply_membership(state, state.ring, reason)
  defp perform_one(state, :synced), do: finish_heal(state)

  defp perform_one(state, :send_orphans) do
    send_orphans(state)
    %{state | lost: nil}
  end

  defp perform_one(state, :suspend_children) do
    ids = for {id, _, _, _} <- Table.local_entries(state.registry, state.me), do: id
    {state, _results, stopped} = stop_local(state, ids, :suspended)
    broadcast_unregistered(state, stopped, :suspended, %{})
    emit(state, :children_stopped, {state.me, stopped})
  end

  # A redistribution: every row decided again against the ring, timed.
  # After a leave, only the rows the leave can have changed (the others'
  # decision is nil under any ring, Placement.after_loss/4).
  defp perform_one(state, {:reconcile, old_ring, reason}) do
    started = System.monotonic_time()

    rows =
      case {state.lost, reason} do
        {{node, rows}, {:left, node}} -> rows
        _ -> Table.rows(state.registry)
      end

    {state, moved} = reconcile_counted(%{state | lost: nil}, rows, old_ring)
    duration = System.monotonic_time() - started
    perform(state, Events.redistribution(state.hub, state.me, reason, duration, moved))
  end
end
