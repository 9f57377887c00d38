defmodule Synod.Hub.Perform do
  @moduledoc false
  # The coordinator's hands: the one place that does I/O for it
  # (docs/hub.md, "Structure: the shell and its effects"). `perform/2`
  # carries out the effects the pure modules (Requests, Announcements,
  # Membership, Migrations, Reconcile, EventQueue, Events, Adopt) return, one
  # clause per effect, in list order; the other functions here are the
  # reads a decision takes (rows, tombstones, the clock's tick, whether a
  # sender is a peer) and the steps that need the children's supervisor
  # between two pure decisions (a request's local starts and stops).
  # Every function takes and returns the coordinator's state.

  require Logger

  alias Synod.Hub.{
    Announcements,
    Children,
    EventQueue,
    Events,
    Membership,
    Migrations,
    Placement,
    Reconcile,
    Registry,
    Replies,
    Requests,
    Table,
    Tombstones
  }

  alias Synod.Ring

  @typedoc "The coordinator's state (built by Synod.Hub.Adopt.state/3)."
  @type state :: map()

  # How long a member that lost a peer's coordinator while the peer's node
  # stays connected waits for its successor (which adopts the children
  # there) before it counts the peer as gone; and how long a coordinator
  # that adopted waits for the members it knew to answer its hello.
  @peer_restart_grace 5_000

  @doc "The hub and node, for log lines."
  @spec who(state()) :: String.t()
  def who(state), do: "Synod hub #{inspect(state.hub)} on #{state.me}"

  # ── starting and stopping ────────────────────────────────────────────────

  # A big batch leaves a big heap of garbage behind (the batch, the answers);
  # collect it now rather than carry it until the next natural collection.
  @big_batch 5_000
  @doc "Collects the garbage a big batch (`list`) leaves, now."
  @spec after_batch(list()) :: :ok
  def after_batch(list) do
    if length(list) >= @big_batch, do: :erlang.garbage_collect()
    :ok
  end

  @doc "A start request (`synod_start`, or a local call with no respondents): `{state, results}`."
  @spec handle_start(state(), reference(), [pid()], list(), keyword()) :: {state(), list()}
  # A start from a client is a new incarnation of each child; one from a
  # member (`migration: true`) moves an existing one, refused as `:stopped`
  # when a stop came first.
  def handle_start(state, ref, reply_to, entries, opts) do
    request = {ref, reply_to, opts}

    case Requests.start(state.partitioned, request, entries) do
      {:refuse, results, effects} ->
        {perform(state, effects), results}

      {:start, kind} ->
        {state, results, rows, started} = start_local(state, entries, kind)
        {perform(state, Requests.started(request, state.me, results, rows, started)), results}
    end
  end

  @doc "A stop request (`synod_stop`, or a local call with no respondents): `{state, results}`."
  @spec handle_stop(state(), reference(), [pid()], [term()], keyword()) :: {state(), list()}
  # A stop is recorded before anything else: a tombstone per id, stamped
  # now, which every member keeps and compares before it re-creates a row
  # or starts a copy (docs/hub.md, "Stops"). Ids with no copy here are
  # recorded too, and sent to every member, in case a copy is on its way.
  # A minority under :majority refuses, as it refuses starts.
  def handle_stop(state, ref, reply_to, ids, opts) do
    request = {ref, reply_to, opts}

    case Requests.stop(state.partitioned, request, ids) do
      {:refuse, results, effects} ->
        {perform(state, effects), results}

      :stop ->
        {t, state} = tick(state)
        {state, results, stopped} = stop_local(state, ids, {:stopped, t})
        # the tombstones of the ids found with no copy, for a stop that
        # raced another member's (Requests.answer_stop/7 decides)
        tombs = raced(state, results)
        now = System.monotonic_time(:millisecond)

        {results, effects} =
          Requests.answer_stop(request, state.me, ids, t, {results, stopped}, tombs, now)

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

  # The rows a local stop for `reason` reads: a stop request deletes every
  # row it stops (Registry.keep_row?/2), so only the copies are read, not
  # the spec and the slot (Table.copy_rows/2); other stops may keep the row.
  defp stop_rows(state, ids, {:stopped, _t}), do: Table.copy_rows(state.registry, ids)
  defp stop_rows(state, ids, _reason), do: rows_of(state, ids)

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
    plan = Requests.plan_stops(ids, stop_rows(state, ids, reason), me)
    _ = Children.stop_ids(state.sup, Requests.to_stop(plan))
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

  # A stop request's tombstones, stamped `t` by this node's clock.
  defp put_stop(state, [], _t), do: state

  defp put_stop(state, ids, t) do
    now = System.monotonic_time(:millisecond)
    :ok = Tombstones.record_stop(state.meta, ids, t, now, state.tombs)
    observe(%{state | tombs: max(state.tombs || 0, t)}, t)
  end

  # A peer's stop request's tombstones; `stopped` as in Tombstones.record/4.
  defp put_stop_ids(state, [], _t, _stopped), do: state

  defp put_stop_ids(state, ids, t, stopped) do
    now = System.monotonic_time(:millisecond)
    copies? = state.copies != false
    :ok = Tombstones.record_ids(state.meta, ids, t, stopped, now, state.tombs, copies?)
    copies = Tombstones.copies_after(state.copies, stopped, now)
    observe(%{state | tombs: max(state.tombs || 0, t), copies: copies}, t)
  end

  # A peer's stop request stamped `t` of `ids`, whose copies on the peer
  # already left `rows` (those the ids still have here): every copy here
  # and row the tombstones cover goes.
  defp apply_stop(state, ids, t, rows) do
    {covered, doomed} = Requests.covered(for(row <- rows, do: {t, row}), state.me)
    {state, _results, stopped} = stop_local(state, doomed, :stopped)
    perform(state, Requests.stops_applied(state.me, ids, t, covered, stopped))
  end

  # Records `[{id, t}]`; `stopped` as in Tombstones.record/4.
  defp put_tombstones(state, [], _stopped), do: state

  defp put_tombstones(state, tombstones, stopped) do
    now = System.monotonic_time(:millisecond)
    :ok = Tombstones.record(state.meta, tombstones, stopped, now, state.tombs)
    newest = Tombstones.newest(tombstones)
    copies = Tombstones.copies_after(state.copies, stopped, now)
    observe(%{state | tombs: max(state.tombs || 0, newest), copies: copies}, newest)
  end

  @doc "The entries, orphans or rows of `list` that no tombstone here covers (`Announcements.live/2`)."
  @spec live(state(), list()) :: list()
  # Entries, orphans or rows whose incarnation a tombstone covers are
  # stopped children: dropped (Announcements.live/2 decides, given the
  # tombstones read here).
  def live(%{tombs: false}, list), do: list
  def live(state, list), do: Announcements.live(list, stamps(state, list))

  # `%{id => t}` for the items a tombstone here may cover, by a plain walk
  # (usually none: every incarnation above the `tombs` bound, no lookup).
  defp stamps(%{tombs: false}, _list), do: %{}
  defp stamps(state, list), do: stamps(state, list, [])

  defp stamps(state, [item | list], found) do
    id = elem(item, 0)

    case tombstone(state, id, Registry.inc(elem(item, 2))) do
      nil -> stamps(state, list, found)
      t -> stamps(state, list, [{id, t} | found])
    end
  end

  defp stamps(_state, [], []), do: %{}
  # (in order, so that a later item of an id wins, as it did)
  defp stamps(_state, [], found), do: :maps.from_list(:lists.reverse(found))

  @doc "Whether `node` is a peer now (an awaited one included)."
  @spec peer?(state(), node()) :: boolean()
  def peer?(state, node), do: Map.has_key?(state.peers, node)

  # Tombstones from another member: recorded, and every copy here and row
  # they cover goes (a copy whose stop request never came here included).
  defp apply_tombstones(state, [], _rows), do: state

  # `rows`: `[{t, row}]`, the rows the ids of `tombstones` have (Table.with_rows/2).
  defp apply_tombstones(state, tombstones, rows) do
    {covered, doomed} = Requests.covered(rows, state.me)
    {state, _results, stopped} = stop_local(state, doomed, :stopped)
    perform(state, Requests.tombstones_applied(state.me, tombstones, covered, stopped))
  end

  @doc "Drops the old tombstones, while every member ever known is connected."
  @spec sweep_tombstones(state()) :: state()
  # Tombstones are dropped once old, and only while every member this node
  # has known is connected: a member cut off may still hold a copy or a row
  # that its tombstone must meet when it comes back.
  def sweep_tombstones(%{tombs: false} = state), do: %{state | copies: false}

  def sweep_tombstones(state) do
    complete? = Membership.complete?(state.known, state.peers, state.restarting)
    now = System.monotonic_time(:millisecond)
    state = sweep_copies(state, now)

    case Tombstones.sweep_cutoff(complete?, now) do
      nil ->
        state

      cutoff ->
        Tombstones.sweep(state.meta, cutoff)

        if Tombstones.any?(state.meta),
          do: state,
          else: %{state | tombs: false, copies: false}
    end
  end

  # The copies tombstones recorded more than Tombstones.copy_window/0 ago
  # answer no stop request: forgotten, so that a peer's re-stop of the ids
  # can put its tombstones whole (Tombstones.record_ids/7).
  defp sweep_copies(state, now) do
    case Tombstones.copies_sweep(state.copies, now) do
      nil ->
        state

      {cutoff, copies} ->
        Tombstones.clear_copies(state.meta, cutoff)
        %{state | copies: copies}
    end
  end

  @doc "A local child with `row` exited by itself as `old_pid`: restarted as `new_pid`, or gone (nil)."
  @spec child_exited(state(), tuple(), pid(), pid() | nil) :: state()
  # A local child exited by itself: restarted under `new_pid`, or gone
  # (Announcements.child_exited/5 decides, given its mode read here).
  def child_exited(state, {id, _, _, _} = row, old_pid, new_pid) do
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
      {:stopped, t} -> broadcast_stopped(state, t, changes, replies)
    end
  end

  # A stop request's registry change: the ids whose copy it stopped here,
  # stamped `t` (the receivers know the rows and read the pids there).
  defp broadcast_stopped(state, t, ids, replies) do
    for {node, _} <- state.peers do
      node_replies = Map.get(replies, node, [])

      if ids != [] or node_replies != [] do
        send({state.hub, node}, {:synod_stopped, state.me, t, ids, node_replies})
      end
    end

    :ok
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

  # Tombstones (docs/hub.md, "Stops") are swept this often.
  @sweep_every 10_000

  @doc "Arms the next `synod_sweep` of the tombstones."
  @spec arm_sweep(state()) :: reference()
  def arm_sweep(state), do: Process.send_after(self(), {:synod_sweep, state.token}, @sweep_every)

  @doc "Says hello to the coordinators of `nodes`."
  @spec greet(state(), [node()]) :: :ok
  def greet(state, nodes) do
    for node <- nodes, do: send({state.hub, node}, hello(state, :synod_hello))
    :ok
  end

  @doc "A hub that stops says goodbye to its peers and drops its tables' name."
  @spec bye(state()) :: true
  def bye(state) do
    for {node, _} <- state.peers, do: send({state.hub, node}, {:synod_bye, state.me})
    :persistent_term.erase({Synod.Hub, state.hub})
  end

  @doc "Subscriber `pid` listens to `ids` (`:all` or a list), monitored once."
  @spec subscribe(state(), pid(), :all | [term()]) :: state()
  def subscribe(state, pid, ids) do
    subs =
      case state.subs do
        %{^pid => {mref, _}} -> Map.put(state.subs, pid, {mref, ids})
        subs -> Map.put(subs, pid, {Process.monitor(pid), ids})
      end

    put_subs(state, subs)
  end

  @doc "Subscriber `pid` stops listening (nothing if it did not)."
  @spec unsubscribe(state(), pid()) :: state()
  def unsubscribe(state, pid) do
    case Map.pop(state.subs, pid) do
      {nil, _} ->
        state

      {{mref, _}, subs} ->
        Process.demonitor(mref, [:flush])
        put_subs(state, subs)
    end
  end

  @doc "The handshake message `tag` (`:synod_hello` or `:synod_welcome`) of this coordinator."
  @spec hello(state(), atom()) :: tuple()
  def hello(state, tag), do: {tag, state.me, self(), state.hash}

  @doc "The members this node sees, itself included, sorted."
  @spec members(state()) :: [node()]
  def members(state), do: Enum.sort([state.me | Map.keys(state.peers)])

  @doc "Coordinator `pid` of `node` said hello or welcome (`Membership.hello/3`)."
  @spec add_peer(state(), node(), pid()) :: state()
  def add_peer(state, node, pid), do: perform(state, Membership.hello(state.peers, node, pid))

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

  @doc "The monitor on `node`'s coordinator fired with `reason` (`Membership.down/4`)."
  @spec peer_down(state(), node(), term()) :: state()
  # The monitor on a peer's coordinator fired. A node that is gone is gone;
  # a coordinator that died on a node still connected is being restarted by
  # its supervisor and adopts its children: wait for it a while.
  def peer_down(state, node, reason),
    do: perform(state, Membership.down(state.peers, node, reason, node in Node.list()))

  @doc "Counts `node` as awaited and arms its `synod_peer_timeout` (its leave says `why`)."
  @spec await_peer(state(), node(), term()) :: state()
  def await_peer(state, node, why) do
    ref = make_ref()
    Process.send_after(self(), {:synod_peer_timeout, ref}, @peer_restart_grace)

    %{
      state
      | peers: Map.put(state.peers, node, {nil, nil}),
        restarting: Map.put(state.restarting, node, {ref, why})
    }
  end

  @doc "The subscribers, kept in the meta table too (a successor adopts them)."
  @spec put_subs(state(), map()) :: state()
  def put_subs(state, subs) do
    :ets.insert(state.meta, {:subs, subs})
    %{state | subs: subs}
  end

  @doc "Peer `node` left for `reason` (`Membership.leave/3`)."
  @spec remove_peer(state(), node(), term()) :: state()
  def remove_peer(state, node, reason),
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

  @doc "A new ring for the members now (`Membership.on_change/6`), stored and its effects performed."
  @spec apply_membership(state(), term(), term()) :: state()
  # Rebuilds the ring for the current members; Membership decides whether
  # this side is partitioned and whether children move to match the new
  # ring (`reason` says why, for the redistribution event).
  def apply_membership(state, old_ring, reason) do
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

  @doc "Hub event `id` through the event queue: `{answer, state}` (`EventQueue.dispatch/5`)."
  @spec enqueue_event(state(), atom(), term(), boolean()) :: {atom(), state()}
  def enqueue_event(state, id, data, discard) do
    paused = state.migrations != %{}
    {queue, answer, effects} = EventQueue.dispatch(state.queue, paused, id, data, discard)
    {answer, deliver_all(%{state | queue: queue}, effects)}
  end

  @doc "A hub event: its telemetry (`Events`), then the event queue."
  @spec emit(state(), atom(), term()) :: state()
  # A hub event: its telemetry (Synod.Hub.Events), then the event queue.
  def emit(state, id, data) do
    state = perform(state, Events.telemetry(state.hub, state.me, id, data))
    {_, state} = enqueue_event(state, id, data, false)
    state
  end

  # Builds the (possibly large) event only when someone listens (Events.started/4).
  defp emit_started(state, node, entries),
    do: perform(state, Events.started(state.hub, node, entries, state.subs != %{}))

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

  @doc "One step `fun` of the moves' books (`Migrations`), its effects performed."
  @spec step_moves(state(), (Migrations.t() -> {Migrations.t(), list()})) :: state()
  # One step of the moves' books (Synod.Hub.Migrations), its effects performed.
  def step_moves(state, fun) do
    books = %Migrations{moves: state.migrations, migrating: state.migrating}
    {%Migrations{moves: moves, migrating: migrating}, effects} = fun.(books)
    perform(%{state | migrations: moves, migrating: migrating}, effects)
  end

  @doc "Carries out `effects` in list order."
  @spec perform(state(), list()) :: state()
  # The interpreter of what the pure modules decide: effects are plain
  # data, carried out in list order.
  def perform(state, []), do: state
  def perform(state, [effect | rest]), do: state |> perform_one(effect) |> perform(rest)

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

  defp perform_one(state, {:put_stop, ids, t}), do: put_stop(state, ids, t)

  defp perform_one(state, {:put_stop_ids, ids, t, stopped}),
    do: put_stop_ids(state, ids, t, stopped)

  defp perform_one(state, {:apply_stop, ids, t, rows}), do: apply_stop(state, ids, t, rows)

  # A peer's stop request: its copies leave the rows, the rows left are
  # given to the next step (Announcements.stops_removed/6).
  defp perform_one(state, {:remove_stopped, from, t, ids, replies}) do
    {gone, rows} = Table.remove_node_copies(state.registry, ids, from)
    perform(state, Announcements.stops_removed(from, t, ids, gone, rows, replies))
  end

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
    rows = Table.put_new_pids(state.registry, entries)
    rf = state.cfg.replication_factor
    perform(state, Announcements.copies_put(from, entries, rows, replies, rf))
  end

  defp perform_one(state, {:remove_copies, from, stopped, reason, replies}) do
    rows = Table.remove_pids(state.registry, stopped, reason)
    perform(state, Announcements.copies_removed(from, stopped, reason, rows, replies))
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

  defp perform_one(state, {:drop_copies, node}) do
    Table.drop_node(state.registry, node)
    state
  end

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
