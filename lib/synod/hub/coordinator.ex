defmodule Synod.Hub.Coordinator do
  @moduledoc false
  # The hub's process on one node, registered under the hub's name. A shell:
  # init (Synod.Hub.Adopt: fresh tables, or a predecessor's adopted), the
  # GenServer callbacks, and a route from each message to the pure modules
  # (Synod.Hub.Requests, Announcements, Membership, Migrations, EventQueue,
  # ...), whose effects Synod.Hub.Perform carries out (docs/hub.md,
  # "Structure: the shell and its effects"). Every message it accepts is a
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

  alias Synod.Hub.{
    Adopt,
    Announcements,
    Children,
    Membership,
    Migrations,
    Perform,
    Protocol,
    Registry,
    Stray,
    Table
  }

  alias Synod.Ring

  import Perform,
    only: [
      perform: 2,
      after_batch: 1,
      handle_start: 5,
      handle_stop: 5,
      live: 2,
      peer?: 2,
      step_moves: 2,
      enqueue_event: 4,
      put_subs: 2,
      add_peer: 3,
      hello: 2,
      remove_peer: 3,
      peer_down: 3,
      members: 1,
      apply_membership: 3,
      who: 1,
      sweep_tombstones: 1,
      child_exited: 4
    ]

  # ── lifecycle ────────────────────────────────────────────────────────────

  def start_link(cfg), do: GenServer.start_link(__MODULE__, cfg, name: cfg.name)

  def child_spec(cfg),
    do: %{id: __MODULE__, start: {__MODULE__, :start_link, [cfg]}, shutdown: 10_000}

  @impl true
  def init(cfg) do
    Process.flag(:trap_exit, true)
    Process.flag(:message_queue_data, :off_heap)
    sup = Process.whereis(Synod.Hub.Supervisor.children_name(cfg.name))
    # The children's supervisor outlives this process: it holds the tables
    # of a predecessor that crashed, and every child that runs here.
    {token, tables, local} = Children.attach(sup)
    :ok = :net_kernel.monitor_nodes(true)
    state = Adopt.state(cfg, sup, token)
    Perform.arm_sweep(state)
    state = Adopt.tables(state, tables, local)
    Perform.greet(state, Node.list())
    {:ok, state}
  end

  # Only a hub that stops says goodbye: a coordinator that crashed is
  # restarted and adopts the children, and its peers wait for it.
  @impl true
  def terminate(reason, state) do
    if reason in [:normal, :shutdown] or match?({:shutdown, _}, reason) do
      Perform.bye(state)
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
    Stray.call(request, from, state, fn -> who(state) end, Protocol.call?(request), &call/3)
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
        Perform.greet(state, Node.list())
        state
    end
  end

  defp call(:synod_barrier, _from, state), do: {:reply, :ok, state}

  defp call({:synod_dispatch_event, id, data, discard}, _from, state) do
    {answer, state} = enqueue_event(state, id, data, discard)
    {:reply, {:ok, answer}, state}
  end

  defp call({:synod_subscribe, pid, ids}, _from, state),
    do: {:reply, :ok, Perform.subscribe(state, pid, ids)}

  defp call({:synod_unsubscribe, pid}, _from, state),
    do: {:reply, :ok, Perform.unsubscribe(state, pid)}

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
    peer? = peer?(state, from)
    entries = if peer?, do: live(state, entries), else: entries
    state = perform(state, Announcements.registered(peer?, from, entries, replies))
    after_batch(entries)
    {:noreply, state}
  end

  defp info({:synod_sync, from, entries, orphans, tombstones}, state) do
    peer? = peer?(state, from)
    {:noreply, perform(state, Announcements.sync(peer?, from, entries, orphans, tombstones))}
  end

  defp info({:synod_tombstones, from, tombstones}, state),
    do: {:noreply, perform(state, Announcements.tombstones(peer?(state, from), tombstones))}

  defp info({:synod_sweep, token}, %{token: token} = state) do
    Perform.arm_sweep(state)
    {:noreply, sweep_tombstones(state)}
  end

  defp info({:synod_orphans, from, orphans}, state) do
    peer? = peer?(state, from)
    orphans = if peer?, do: live(state, orphans), else: orphans
    {:noreply, perform(state, Announcements.orphans(peer?, orphans))}
  end

  defp info({:synod_stopped, from, t, ids, replies}, state) do
    effects = Announcements.stopped(peer?(state, from), from, t, ids, replies)
    {:noreply, perform(state, effects)}
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
    Perform.greet(state, [node])
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

  # Tables handed over by the children's supervisor (Synod.Hub.Adopt).
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
end
