defmodule Synod.Raft.Member do
  @moduledoc false
  # One member of one Raft group on this node: the shell around the C core
  # (c_src/raft.c through c_src/synod_nif_raft.c). It owns the timer, the
  # files (Synod.Raft.Storage), the distribution messages, the node monitors
  # and the state machine, and carries out what the core decides, in the
  # order c_src/raft.h requires:
  #
  #   input (tick, message from a member, client request)
  #     -> raft_ready: send the early messages, persist (+ fsync when the
  #        core says must_sync), send the rest, apply, notify
  #
  # Group commit: with `batch: true` (the default) an input does not drain
  # the core at once; the member sends itself `:flush`, so every request
  # already in its mailbox is proposed first and one fsync covers them all.
  #
  # Fast failover: the member watches nodes (`:net_kernel.monitor_nodes`).
  # When the leader's node goes down, each surviving voter forgets the leader
  # at once (ending leader stickiness, so it will grant votes) and campaigns
  # after `rank * failover_step_ms` plus a little jitter, where `rank` is its
  # place in the group's rendezvous order of the surviving voters
  # (Synod.Raft.Balancer.rank/2, so groups prefer different nodes): the
  # survivors start their pre-votes one after another instead of all at once. Heartbeat timeouts
  # remain the fallback for partitions that send no nodedown.
  #
  # Messages between members:
  #
  #   {:synod_raft, Group, FromId, FromNode, EncodedRaftMessage}
  #
  # to the member registered as `Synod.Raft.member_name(Group)` on the
  # target node. Log entries of type normal hold `term_to_binary` of
  #
  #   {:c, Command, RequestId}  a command for the state machine; RequestId
  #                             (a ref made once per Synod.Raft.command/3
  #                             call) makes retries apply it only once
  #   {:peer, Id, Node}      the node of a member id (before adding it)
  #   {:witness, Id, Node}   the same, and that member is a witness (a C
  #                          node that votes but never leads): the kind is
  #                          group state, applied by every member, carried
  #                          by snapshots (encode_snapshot/1)
  #
  # Snapshot data: see encode_snapshot/1.

  use GenServer
  require Logger

  alias Synod.Raft.{Info, SafeTerm, Storage, Wal, Watches}
  alias Synod.Raft.Wal.Pending
  alias Synod.Stray
  alias Synod.Telemetry.Emit

  @entry_normal 0
  # Request ids (and results) remembered for retries.
  @sessions_max 20_000
  @entry_conf 2

  defstruct [
    :group,
    :id,
    :raft,
    :storage,
    :machine,
    :machine_arg,
    :machine_state,
    :tick_ms,
    :election_tick,
    :snapshot_every,
    :failover_step_ms,
    :watches,
    # nil, or while the storage cannot persist (a full disk): %{reason,
    # since, backoff, retries, unapplied} (see "A full disk" below)
    stuck: nil,
    # A received snapshot that failed its check, refused after a backoff:
    # nil or {Ref, Index, Term}; and how many failed in a row.
    refusing: nil,
    refused: 0,
    # :files, or :wal with the node's shared WAL (its pid): see "The shared
    # write-ahead log" below
    log: :files,
    wal: nil,
    # :wal only: the member's directory as its WAL records name it,
    # expanded once: Path.expand/1 asks the file server for the cwd even
    # for an absolute path (a call, about 60 us), which was on every write
    segment_dir: nil,
    # :files with `fsync_writer: true`: the process that fdatasyncs this
    # member's log file while the member keeps stepping (Synod.Raft.Syncer)
    syncer: nil,
    # With a syncer: the request in flight (its seq, or nil), and the seq
    # that the Readies written meanwhile wait for (nil: none waits): they
    # stay in the storage's buffer and go to the file, and to the syncer,
    # as one write when the request in flight is answered (hold/2).
    syncing: nil,
    next_sync: nil,
    # :wal, or :files with a syncer: the writes in flight, Ready seq <->
    # WAL append or syncer request (Synod.Raft.Wal.Pending)
    wal_pending: nil,
    batch: true,
    fast_failover: true,
    flush_scheduled: false,
    # A :tick timer is pending. A quiesced core ignores ticks, so the timer
    # stops while it is quiesced and starts again after the input that
    # wakes it (resume_tick/1).
    ticking: false,
    # A follower monitors its leader's member process ({Ref, Node} or nil):
    # a quiesced group has no election timer running, so a leader member
    # that stops or crashes on a node that stays up must be noticed by its
    # DOWN (a lost node still by nodedown). See watch_leader/1.
    leader_mon: nil,
    applied: 0,
    since_snapshot: 0,
    # a snapshot being streamed to its file by a linked process:
    # nil or {Ref, Index, Path} (see "snapshots" below)
    snap_job: nil,
    node_of: %{},
    # Witness nodes as the group recorded them ({:witness, Id, Node}
    # entries, snapshots), and those named by this member's :witnesses
    # option (bootstrap witnesses), which a leader records once per term.
    witnesses: [],
    seed_witnesses: [],
    seeded_term: 0,
    connecting: %{},
    subscribers: %{},
    sessions: nil,
    notified: 0,
    pending: %{},
    proposed_at: %{},
    # Whether a [:synod, :raft, :commit] handler is attached (Emit.commit?/0),
    # looked up at the end of every drain.
    timed: false,
    # {Pid, Alias} => [{Tag, Answer}]: the answers to pipelines made by the
    # entries being applied, sent once the batch is applied
    replies: %{},
    reads: %{},
    ready_reads: [],
    next_ctx: 1,
    view: %{role: :follower, leader: nil, term: 0}
  ]

  # -- start ------------------------------------------------------------------

  def start_link(opts) do
    GenServer.start_link(__MODULE__, opts, name: Synod.Raft.member_name(opts[:name]))
  end

  @impl true
  def init(opts) do
    group = opts[:name]
    {machine, arg} = opts[:machine]
    id = Synod.Raft.member_id(node())

    with {:ok, wal} <- open_wal(opts),
         {:ok, storage, recovered} <- open_storage(opts[:data_dir]),
         :ok <- wal_opened(storage, wal),
         {:ok, machine_state, {node_of, witnesses}, sessions, applied} <-
           recover_machine(storage, recovered, machine, arg),
         {:ok, raft} <- new_raft(id, opts, recovered, applied) do
      :ok = :net_kernel.monitor_nodes(true)
      syncer = if fsync_writer?(opts), do: Synod.Raft.Syncer.start_link()
      voter_nodes = Map.new(opts[:voters] || [], &{Synod.Raft.member_id(&1), &1})

      state = %__MODULE__{
        timed: Emit.commit?(),
        group: group,
        id: id,
        raft: raft,
        storage: storage,
        machine: machine,
        machine_arg: arg,
        machine_state: machine_state,
        tick_ms: opts[:tick_ms],
        election_tick: opts[:election_tick],
        snapshot_every: opts[:snapshot_every],
        failover_step_ms: opts[:failover_step_ms],
        batch: opts[:batch],
        log: if(wal, do: :wal, else: :files),
        wal: wal,
        syncer: syncer,
        wal_pending: if(wal || syncer, do: Pending.new()),
        segment_dir: wal && Path.expand(storage.dir),
        witnesses: witnesses,
        seed_witnesses: opts[:witnesses] || [],
        fast_failover: opts[:fast_failover],
        watches: Watches.name(group),
        applied: applied,
        sessions: sessions,
        node_of: voter_nodes |> Map.merge(node_of) |> Map.put(id, node()),
        view: %{role: :follower, leader: nil, term: recovered.hard_state.term}
      }

      Info.put(group, self(), state.view)
      state = schedule_tick(state)
      if opts[:fast_failover] and bootstrap?(recovered, opts), do: schedule_failover(state, nil)
      {:ok, drain(state)}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  defp open_storage(dir) do
    case Storage.open(dir) do
      {:ok, storage, recovered} -> {:ok, storage, recovered}
      {:error, {:corrupt, _, _, _} = why} -> {:error, why}
      {:error, why} -> {:error, {:storage, dir, why}}
    end
  end

  defp recover_machine(_storage, %{snapshot: nil}, machine, arg),
    do: {:ok, machine.init(arg), {%{}, []}, {%{}, :queue.new()}, 0}

  defp recover_machine(storage, %{snapshot: snap}, machine, arg) do
    case load_snapshot(storage, snap, machine, arg) do
      {:ok, {node_of, sessions, machine_state, witnesses}} ->
        {:ok, machine_state, {node_of, witnesses}, sessions, snap.index}

      {:error, {:unsafe_term, why}} ->
        {:error, {:unsafe_term, :snapshot, snap.index, why}}

      {:error, why} ->
        {:error, why}
    end
  end

  defp new_raft(id, opts, recovered, applied) do
    %{hard_state: hs, snapshot: snap, entries: entries} = recovered
    fresh? = snap == nil and entries == [] and hs.term == 0

    voters =
      if fresh? and not opts[:join],
        do: Enum.map(opts[:voters], &Synod.Raft.member_id/1),
        else: []

    if voters != [] and node() not in opts[:voters] do
      {:error, {:not_a_voter, node()}}
    else
      start_raft(id, opts, hs, snap, entries, voters, applied)
    end
  end

  defp start_raft(id, opts, hs, snap, entries, voters, applied) do
    config = %{
      id: id,
      seed: :synod_nif.raft_seed(),
      election_tick: opts[:election_tick],
      heartbeat_tick: opts[:heartbeat_tick],
      quiesce: opts[:quiesce],
      # the shared WAL, or its own log fsynced by its syncer: the member
      # keeps stepping while its writes are in flight ("Members that keep
      # stepping" in docs/raft.md)
      async_persist: opts[:log] == :wal or fsync_writer?(opts),
      max_inflight: opts[:max_inflight],
      snapshot_chunk: opts[:snapshot_chunk],
      voters: voters,
      hard_state: {hs.term, hs.vote, hs.commit},
      snapshot: snap && snapshot_tuple(snap),
      entries: Enum.map(entries, &{&1.index, &1.term, &1.type, &1.data}),
      applied: applied
    }

    case :synod_nif.raft_new(config) do
      {:ok, raft} -> {:ok, raft}
      {:error, why} -> {:error, {:raft_new, why}}
    end
  end

  defp fsync_writer?(opts), do: opts[:log] == :files and opts[:fsync_writer] == true

  defp snapshot_tuple(%{index: i, term: t, meta: meta, size: size, checksum: c}) do
    {voters, learners} = :erlang.binary_to_term(meta, [:safe])
    {i, t, voters, learners, size, c}
  end

  # -- inputs -----------------------------------------------------------------

  @impl true
  def handle_info({:synod_raft, _group, _from_id, _from_node, _bin}, %{stuck: %{}} = state),
    do: {:noreply, state}

  def handle_info({:synod_raft, group, from_id, from_node, bin}, %{group: group} = state)
      when is_integer(from_id) and from_id > 0 and is_atom(from_node) and is_binary(bin) do
    # The sender's node is learnt only from a message the core took: junk
    # must not redirect the messages meant for a member id.
    case :synod_nif.raft_step(state.raft, bin) do
      :ok ->
        {:noreply, state |> learn_node(from_id, from_node) |> after_input()}

      {:error, why} ->
        Stray.warn("raft #{state.group}: message from #{inspect(from_node)} refused: #{why}")
        {:noreply, after_input(state)}
    end
  end

  def handle_info(:tick, %{stuck: %{}} = state) do
    {:noreply, schedule_tick(state)}
  end

  def handle_info(:tick, state) do
    :ok = :synod_nif.raft_tick(state.raft)

    state =
      if :synod_nif.raft_quiesced(state.raft),
        do: %{state | ticking: false},
        else: schedule_tick(state)

    {:noreply, after_input(state)}
  end

  def handle_info(:flush, state) do
    {:noreply, %{state | flush_scheduled: false} |> take_notices() |> drain()}
  end

  def handle_info(:retry_storage, state), do: {:noreply, retry_storage(state)}

  # A leader's snapshot file open for sending is closed after this long
  # without a chunk (chunk_message/3).
  @send_idle_ms 30_000

  def handle_info({:snapshot_written, ref, result}, %{snap_job: {ref, _, _}} = state),
    do: {:noreply, state |> snapshot_written(result) |> after_input()}

  def handle_info(:close_idle_snapshot, state) do
    {open?, storage} = Storage.close_idle_send(state.storage, @send_idle_ms)
    if open?, do: Process.send_after(self(), :close_idle_snapshot, @send_idle_ms)
    {:noreply, %{state | storage: storage}}
  end

  def handle_info({:refuse_snapshot, ref}, %{refusing: {ref, index, term}} = state) do
    state = %{state | refusing: nil}

    case :synod_nif.raft_snapshot_received(state.raft, index, term, false) do
      :ok -> {:noreply, after_input(state)}
      {:error, why} -> exit({:raft_snapshot_received, why})
    end
  end

  def handle_info(
        {:nodedown, node},
        %{fast_failover: true, view: %{leader: node, role: :follower}, stuck: nil} = state
      ) do
    _ = :synod_nif.raft_control(state.raft, :forget_leader, 0)
    schedule_failover(state, node)
    {:noreply, after_input(state)}
  end

  def handle_info({:failover, down, term}, state) do
    # Still no leader (or still the one that went down) and nobody has
    # started an election since: campaign. If someone has, let it finish;
    # the election timeout remains the fallback.
    if state.stuck == nil and state.view.leader in [nil, down] and state.view.role != :leader and
         :synod_nif.raft_status(state.raft).term == term do
      _ = :synod_nif.raft_control(state.raft, :campaign, 0)
    end

    {:noreply, after_input(state)}
  end

  def handle_info({:DOWN, _ref, :process, wal, why}, %{wal: wal} = state) when wal != nil,
    do: wal_down(state, why)

  def handle_info({:synod_wal_synced, seq}, %{wal_pending: %Pending{} = p} = state),
    do: {:noreply, state |> confirm(Pending.synced(p, seq)) |> sync_held(seq) |> drain()}

  def handle_info({:synod_wal_synced, _seq}, state), do: {:noreply, state}

  # The leader's member went away on a node that is still up (a lost node
  # is handled by its nodedown): as on nodedown, forget it and campaign in
  # turn, since a quiesced follower's election timer is not running.
  def handle_info({:DOWN, ref, :process, _, why}, %{leader_mon: {ref, node}} = state) do
    state = %{state | leader_mon: nil}

    if why != :noconnection and state.fast_failover and state.stuck == nil and
         state.view.role == :follower and state.view.leader == node do
      _ = :synod_nif.raft_control(state.raft, :forget_leader, 0)
      schedule_failover(state, node)
      {:noreply, after_input(state)}
    else
      {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, _pid, _reason}, state) do
    {:noreply, %{state | subscribers: Map.delete(state.subscribers, ref)}}
  end

  def handle_info(
        {:record_witnesses, term},
        %{stuck: nil, view: %{role: :leader, term: term}} = state
      )
      when state.seeded_term != term do
    for node <- state.seed_witnesses -- state.witnesses do
      data = :erlang.term_to_binary({:witness, Synod.Raft.member_id(node), node})
      _ = :synod_nif.raft_propose(state.raft, data)
    end

    {:noreply, after_input(%{state | seeded_term: term})}
  end

  def handle_info({:record_witnesses, _term}, state), do: {:noreply, state}

  # A leader wakes its group when a member's node goes down or comes up:
  # heartbeats again (check-quorum steps it down if it lost its majority;
  # a member that came back learns who leads without waiting for its
  # election timeout).
  def handle_info({change, node}, %{view: %{role: :leader}, stuck: nil} = state)
      when change in [:nodedown, :nodeup] do
    if node in Map.values(state.node_of) do
      _ = :synod_nif.raft_control(state.raft, :wake, 0)
      {:noreply, after_input(state)}
    else
      {:noreply, state}
    end
  end

  def handle_info({:nodedown, _}, state), do: {:noreply, state}
  def handle_info({:nodeup, _}, state), do: {:noreply, state}

  def handle_info(msg, state) do
    Stray.ignored(who(state.group), :message, msg)
    {:noreply, state}
  end

  # Input from other nodes follows Synod.Stray: an unknown (or malformed)
  # call is answered {:error, {:bad_request, _}}, a cast (it takes none) or
  # an unknown message is dropped, each logged at most once a second.
  @impl true
  def handle_call(request, from, state),
    do: Stray.call(request, from, state, who(state.group), known?(request), &call/3)

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, who(state.group))

  defp known?({:command, _cmd, _request_id}), do: true
  defp known?({:peer, id, node}), do: is_integer(id) and id > 0 and is_atom(node)
  defp known?({:witness, id, node}), do: is_integer(id) and id > 0 and is_atom(node)

  defp known?({:conf_change, op, id}),
    do: op in [:add_learner, :add_voter, :remove] and is_integer(id) and id > 0

  defp known?({:query, _fun, consistency}), do: consistency in [:stale, :linearizable]
  defp known?({:transfer_leader, node}), do: is_atom(node)
  defp known?({:subscribe_applied, pid}), do: is_pid(pid)
  defp known?(request), do: request in [:campaign, :status]

  # The name in Synod.Stray's log lines, built only when one is logged.
  defp who(name), do: fn -> "raft #{inspect(name)} member" end

  defp call({:command, cmd, request_id}, from, state) do
    case state.sessions do
      {%{^request_id => result}, _} -> {:reply, {:ok, result}, state}
      _ -> propose(state, {:c, cmd, request_id}, from)
    end
  end

  # A member that cannot persist takes nothing that would write, at once and
  # by name; reads need a round of acknowledgements it does not take part in.
  defp call(request, _from, %{stuck: %{}} = state)
       when (is_tuple(request) and
               elem(request, 0) in [:peer, :witness, :conf_change, :transfer_leader]) or
              request == :campaign,
       do: {:reply, {:error, :no_space}, state}

  defp call({:query, _fun, :linearizable}, _from, %{stuck: %{}} = state),
    do: {:reply, not_leader(state), state}

  defp call({:peer, id, node}, from, state) do
    propose(state, {:peer, id, node}, from)
  end

  defp call({:witness, id, node}, from, state) do
    propose(state, {:witness, id, node}, from)
  end

  defp call({:conf_change, op, id}, from, state) do
    case :synod_nif.raft_conf_change(state.raft, op, id) do
      {:ok, index, term} -> {:noreply, state |> wait_for(index, term, from, nil) |> after_input()}
      {:error, :not_leader} -> {:reply, not_leader(state), state}
      {:error, why} -> {:reply, {:error, why}, state}
    end
  end

  defp call({:query, fun, :stale}, _from, state) do
    {:reply, run_query(fun, state), state}
  end

  defp call({:query, fun, :linearizable}, from, state) do
    ctx = state.next_ctx

    case :synod_nif.raft_read_index(state.raft, ctx) do
      :ok ->
        state = %{state | next_ctx: ctx + 1, reads: Map.put(state.reads, ctx, {from, fun})}
        {:noreply, after_input(state)}

      {:error, :not_leader} ->
        {:reply, not_leader(state), state}

      {:error, why} ->
        {:reply, {:error, why}, state}
    end
  end

  defp call({:transfer_leader, node}, _from, state) do
    if witness?(state, node),
      do: {:reply, {:error, {:witness, node}}, state},
      else: transfer_leader(node, state)
  end

  defp call({:subscribe_applied, pid}, _from, state) do
    send(pid, {:synod_raft_applied, state.group, state.applied})
    ref = Process.monitor(pid)
    {:reply, :ok, %{state | subscribers: Map.put(state.subscribers, ref, pid)}}
  end

  defp call(:campaign, _from, state) do
    {:reply, :synod_nif.raft_control(state.raft, :campaign, 0), after_input(state)}
  end

  defp call(:status, _from, state) do
    st = :synod_nif.raft_status(state.raft)

    status =
      Map.merge(st, %{
        group: state.group,
        node: node(),
        leader_node: node_of(state, st.leader),
        voter_nodes: Enum.map(st.voters, &node_of(state, &1)),
        learner_nodes: Enum.map(st.learners, &node_of(state, &1)),
        witness_nodes: witness_members(state, st),
        members: members(state, st),
        applied: state.applied,
        # false once a quiesced member's tick timer has stopped
        tick_timer: state.ticking,
        storage: storage_status(state),
        snapshot_index: state.storage.generation,
        log_bytes: Storage.log_bytes(state.storage)
      })

    {:reply, status, state}
  end

  defp transfer_leader(node, state) do
    case :synod_nif.raft_control(state.raft, :transfer_leader, Synod.Raft.member_id(node)) do
      :ok -> {:reply, :ok, after_input(state)}
      {:error, :not_leader} -> {:reply, not_leader(state), state}
      {:error, why} -> {:reply, {:error, why}, state}
    end
  end

  # Every member with its kind: a voter, a learner or a witness (a C node
  # that votes but never leads, recorded by a {:witness, Id, Node} entry or
  # named by the :witnesses option). A witness still a learner (being
  # added) shows as a witness too; voter_nodes/learner_nodes tell its step.
  defp members(state, st) do
    kind = fn node, k -> if witness?(state, node), do: :witness, else: k end

    Enum.map(st.voters, &%{node: node_of(state, &1), kind: kind.(node_of(state, &1), :voter)}) ++
      Enum.map(
        st.learners,
        &%{node: node_of(state, &1), kind: kind.(node_of(state, &1), :learner)}
      )
  end

  defp witness?(state, node), do: node in state.witnesses or node in state.seed_witnesses

  defp witness_members(state, st) do
    (st.voters ++ st.learners)
    |> Enum.map(&node_of(state, &1))
    |> Enum.filter(&witness?(state, &1))
  end

  defp propose(%{stuck: %{}} = state, _entry, _from), do: {:reply, {:error, :no_space}, state}

  # `entry` is the term the log entry holds; the member that proposed it
  # keeps it with the caller, so applying its own entry decodes nothing.
  defp propose(state, entry, from) do
    case :synod_nif.raft_propose(state.raft, :erlang.term_to_binary(entry)) do
      {:ok, index, term} ->
        {:noreply, state |> wait_for(index, term, from, entry) |> after_input()}

      {:error, :not_leader} ->
        {:reply, not_leader(state), state}

      {:error, why} ->
        {:reply, {:error, why}, state}
    end
  end

  # The caller is answered when the entry at `index` is applied: with the
  # result if it is the entry proposed in this term, else {:error, :dropped}.
  # An entry at `index` with the proposal's term is the proposal itself
  # (Raft: one entry per index and term), so `entry`, the term it was
  # encoded from, is applied instead of decoding the entry's bytes.
  # The proposal's time is kept only for a commit event that reaches a
  # handler (Emit.commit/3): `timed` is looked up once per drained batch
  # (`drain/1`), not per command; with no handler no clock is read.
  defp wait_for(state, index, term, from, entry) do
    state = %{state | pending: Map.put(state.pending, index, {term, from, entry})}

    if state.timed,
      do: %{state | proposed_at: Map.put(state.proposed_at, index, System.monotonic_time())},
      else: state
  end

  defp not_leader(state), do: {:error, {:not_leader, state.view.leader}}

  defp after_input(state), do: state |> resume_tick() |> flush()

  defp flush(%{batch: true, flush_scheduled: true} = state), do: state

  # With nothing else in the mailbox there is nothing to batch with: drain
  # now instead of a `:flush` round trip through the mailbox (which would
  # find the same empty mailbox behind it).
  defp flush(%{batch: true} = state) do
    state = take_notices(state)

    case Process.info(self(), :message_queue_len) do
      {:message_queue_len, 0} ->
        drain(state)

      _ ->
        send(self(), :flush)
        %{state | flush_scheduled: true}
    end
  end

  defp flush(state), do: drain(state)

  defp schedule_tick(state) do
    Process.send_after(self(), :tick, state.tick_ms)
    %{state | ticking: true}
  end

  # The input just handled may have woken a quiesced core (a message, a
  # command, a read, a nodedown): it needs its ticks again. While the
  # timer runs this costs nothing; while it is stopped, one NIF call.
  defp resume_tick(%{ticking: true} = state), do: state

  defp resume_tick(state) do
    if :synod_nif.raft_quiesced(state.raft), do: state, else: schedule_tick(state)
  end

  # Campaigns in turn by rank among the voters left (all of them for a new
  # group, whose first election then takes one step instead of a timeout).
  # The order is the group's rendezvous order (Synod.Raft.Balancer.rank/2),
  # so groups elect different nodes first and spread a dead node's groups.
  defp schedule_failover(state, down) do
    st = :synod_nif.raft_status(state.raft)
    down_id = down && Synod.Raft.member_id(down)
    survivors = Synod.Raft.Balancer.rank(state.group, List.delete(st.voters, down_id))
    rank = Enum.find_index(survivors, &(&1 == state.id)) || length(survivors)
    step = state.failover_step_ms
    delay = rank * step + :rand.uniform(max(div(step, 2), 1))
    Process.send_after(self(), {:failover, down, st.term}, delay)
  end

  defp bootstrap?(%{hard_state: hs, snapshot: nil, entries: []}, opts),
    do: hs.term == 0 and not opts[:join]

  defp bootstrap?(_recovered, _opts), do: false

  # -- the Ready loop ---------------------------------------------------------

  defp drain(state) do
    case :synod_nif.raft_ready(state.raft) do
      :none when state.stuck != nil ->
        state

      :none ->
        %{state | timed: Emit.commit?()} |> notify_applied() |> maybe_snapshot()

      {:error, why} ->
        exit({:raft_ready, why})

      {hard_state, sync?, snapshot, entries, early, msgs, committed, events, reads, chunks} =
          ready ->
        state
        |> send_out(early)
        |> crash_point(:before_sync, ready)
        |> persist(hard_state, sync?, snapshot, entries)
        |> write_chunks(chunks)
        |> crash_point(:after_sync, ready)
        |> send_out(msgs)
        |> crash_point(:after_send, ready)
        |> apply_ready(snapshot, committed)
        |> notify(events)
        |> read_states(reads)
        |> snapshot_received(chunks)
        |> drain()
    end
  end

  # raft.h, exactly: the early messages (the leader's appends and
  # heartbeats, which promise nothing about this disk) go first, so the
  # followers write while we write; then the Ready's records, fsynced only
  # when the core says they are promises (`sync?`: entries, a new term or
  # vote); then the messages that depend on them. A Ready that only moves
  # the commit index is buffered and costs no fsync.
  # Test builds only (MIX_ENV=test): test/elixir/raft_crash_test.exs kills
  # this VM with kill -9 at one of the steps above, in the next Ready of a
  # kind it names, by setting the persistent term {Synod.Raft.Member,
  # :crash_at} to {Group, Step, Kind}; Kind :entries is a Ready that
  # persists entries, :vote one that persists a new term or vote and no
  # entries. Other builds compile this to nothing.
  if Mix.env() == :test do
    defp crash_point(state, step, ready) do
      case :persistent_term.get({__MODULE__, :crash_at}, nil) do
        {group, ^step, kind} when group == state.group ->
          if ready_kind?(kind, ready), do: :os.cmd(~c"kill -9 #{System.pid()}")
          state

        _ ->
          state
      end
    end

    defp ready_kind?(:entries, {_, _, _, entries, _, _, _, _, _, _}), do: entries != []

    # (with async_persist, a Ready to be synced carries its seq)
    defp ready_kind?(:vote, {hs, sync, nil, [], _, _, _, _, _, _})
         when sync == true or is_integer(sync),
         do: hs != nil

    defp ready_kind?(_kind, _ready), do: false
  else
    defp crash_point(state, _step, _ready), do: state
  end

  # With `log: :wal` the core runs with async_persist: a Ready to be synced
  # carries a seq instead of `true`, every message of it has already left
  # (the core holds back what depends on this write), and the member hands
  # the records to the WAL and goes on; the WAL's notice confirms the seq
  # (confirm/2, raft_persisted) and the member drains again.
  defp persist(state, hs, seq, nil, entries) when is_integer(seq) do
    storage = Storage.write(state.storage, Enum.map(entries, &entry_map/1), hs && hs_map(hs))
    state = %{state | storage: storage}

    if state.stuck != nil,
      do: confirm(state, Pending.written(state.wal_pending, seq, :buffered)),
      else: hand_to_wal(state, seq)
  end

  defp persist(state, hs, sync?, nil, entries) do
    storage = Storage.write(state.storage, Enum.map(entries, &entry_map/1), hs && hs_map(hs))

    cond do
      state.stuck != nil or not sync? ->
        %{state | storage: storage}

      true ->
        case durable(storage, state) do
          {:ok, storage} -> %{state | storage: storage}
          {:error, why} -> get_stuck(%{state | storage: storage}, why)
        end
    end
  end

  # A received snapshot (the core hands it out only after every chunk was
  # written, fsynced and checked, and raft_snapshot_received said so): its
  # file becomes snapshot.N, the log restarts after it.
  defp persist(state, hs, sync?, {index, term, voters, learners, size, checksum}, entries) do
    hs = hs || current_hard_state(state)

    snap = %{
      index: index,
      term: term,
      meta: :erlang.term_to_binary({voters, learners}),
      size: size,
      checksum: checksum,
      received: true
    }

    entries = Enum.map(entries, &entry_map/1)

    if state.stuck do
      storage = Storage.defer_install(state.storage, snap, hs_map(hs), entries)
      installed(%{state | storage: storage}, sync?, false)
    else
      case Storage.install_snapshot(state.storage, snap, hs_map(hs), entries) do
        {:ok, storage} ->
          installed(%{state | storage: storage}, sync?, true)

        {:error, why} ->
          storage = Storage.defer_install(state.storage, snap, hs_map(hs), entries)
          state = installed(%{state | storage: storage}, sync?, false)
          get_stuck(state, why)
      end
    end
  end

  # A snapshot install is synchronous in both modes (written and fsynced
  # before install_snapshot returns). With async_persist its Ready's seq is
  # then durable, and so is every earlier write (the install replaces the
  # log they went to, and carries the current hard state); a deferred
  # install waits for the retry.
  defp installed(state, seq, true) when is_integer(seq) do
    {_, _, p} = Pending.written(state.wal_pending, seq, :buffered)
    confirm(state, Pending.durable(p))
  end

  defp installed(state, seq, false) when is_integer(seq),
    do: confirm(state, Pending.written(state.wal_pending, seq, :buffered))

  defp installed(state, _sync?, _durable?), do: state

  # The fsync event's clock and byte count only when it reaches a handler.
  defp timed_sync(storage, group) do
    if Emit.fsync?() do
      start = System.monotonic_time()
      bytes = Storage.pending_bytes(storage)
      result = Storage.sync(storage)
      if bytes > 0 and match?({:ok, _}, result), do: Emit.fsync(group, start, bytes)
      result
    else
      Storage.sync(storage)
    end
  end

  # -- the shared write-ahead log ----------------------------------------------
  #
  # With `log: :wal` the member still writes its records into its own log
  # file (Storage.flush/1: the same bytes as Storage.sync/1, no fsync) and
  # hands them to the node's Synod.Raft.Wal, which writes the records of
  # every member on the node in one batch with one fdatasync and sends
  # {:synod_wal_synced, Seq}. Its core runs with async_persist, so the
  # member does not wait for that notice (hand_to_wal/2): the core itself
  # holds back every message that depends on a write in flight and applies
  # only durable entries; the notice, mapped back to the Ready's seq by
  # Synod.Raft.Wal.Pending, becomes raft_persisted and the member drains
  # again. Snapshot installs and the full-disk retry still wait (durable/2,
  # await_wal/2), and then confirm everything written so far. It opens its files
  # only after the WAL has replayed its records into them (ensure_started/2
  # returns after recovery) and fdatasyncs its log once then, so what it
  # recovered is durable before any WAL record points past its end; then it
  # tells the WAL so (Wal.opened/5: recovery cuts its log there and drops
  # the WAL's older records of its dir).
  defp open_wal(opts) do
    if opts[:log] == :wal do
      case Wal.ensure_started(opts[:wal_dir]) do
        {:ok, wal} ->
          Process.monitor(wal)
          {:ok, wal}

        {:error, _} = error ->
          error
      end
    else
      {:ok, nil}
    end
  end

  defp wal_opened(_storage, nil), do: :ok

  defp wal_opened(storage, wal) do
    case Storage.sync_file(storage) do
      :ok ->
        seq = System.unique_integer([:monotonic, :positive])
        :ok = Wal.opened(wal, seq, Path.expand(storage.dir), storage.generation, storage.size)
        await_wal(%{wal: wal, storage: storage, group: nil}, seq)

      {:error, why} ->
        {:error, {:storage, storage.dir, why}}
    end
  end

  # What makes a Ready's records durable: the member's own fsync, or the WAL.
  defp durable(storage, %{wal: nil} = state), do: timed_sync(storage, state.group)

  defp durable(storage, state) do
    # The persist event's clock only when it reaches a handler.
    start = if Emit.fsync?(), do: System.monotonic_time()

    case Storage.flush(storage) do
      {:ok, storage, nil} ->
        {:ok, storage}

      {:ok, storage, {generation, offset, data}} ->
        seq = System.unique_integer([:monotonic, :positive])
        :ok = Wal.append(state.wal, seq, state.segment_dir, generation, offset, data)
        await_wal(state, seq)
        if start, do: Emit.fsync(state.group, start, IO.iodata_length(data))
        {:ok, storage}

      {:error, _} = error ->
        error
    end
  end

  # async_persist: the Ready's records go to the WAL (or, on its own log
  # file, are written and handed to its syncer for the fdatasync) and the
  # member does not wait (the notice comes to handle_info). A full disk
  # makes it stuck as before, its records kept in the buffer for the
  # (synchronous) retry.
  #
  # With a syncer, one request is in flight at a time: a Ready written while
  # one is stays in the buffer (hold/2), under the seq of the next request,
  # and everything buffered goes out as one write and one fdatasync when
  # the notice comes (sync_held/2). The member still steps, commits,
  # applies and answers meanwhile; only the write waits, so every member
  # makes as few fsyncs as when it blocked in them (what arrived during one
  # fsync goes into the next).
  defp hand_to_wal(%{syncer: s, syncing: w} = state, seq) when s != nil and w != nil,
    do: hold(state, seq)

  defp hand_to_wal(state, seq) do
    case Storage.flush(state.storage) do
      {:ok, storage, nil} ->
        confirm(%{state | storage: storage}, Pending.written(state.wal_pending, seq, nil))

      {:ok, storage, {generation, offset, data}} ->
        wal_seq = System.unique_integer([:monotonic, :positive])
        :ok = hand_over(state, wal_seq, storage, generation, offset, data)
        # The persist event's clock and bytes only when it reaches a handler.
        info = if Emit.fsync?(), do: {System.monotonic_time(), IO.iodata_length(data)}
        state = %{state | storage: storage, syncing: state.syncer && wal_seq}
        confirm(state, Pending.written(state.wal_pending, seq, wal_seq, info))

      {:error, why} ->
        state = confirm(state, Pending.written(state.wal_pending, seq, :buffered))
        get_stuck(state, why)
    end
  end

  defp hold(state, seq) do
    next = state.next_sync || System.unique_integer([:monotonic, :positive])
    state = %{state | next_sync: next}
    confirm(state, Pending.written(state.wal_pending, seq, next))
  end

  # The syncer answered `synced`: what was held goes out, as one write and
  # one request. Not while stuck: the full-disk retry writes and fsyncs the
  # buffer itself, in the member, and then confirms everything.
  defp sync_held(%{syncer: nil} = state, _synced), do: state

  defp sync_held(%{syncing: w} = state, synced) when w != nil and synced < w, do: state

  defp sync_held(%{next_sync: nil} = state, _synced), do: %{state | syncing: nil}

  defp sync_held(%{stuck: %{}} = state, _synced), do: %{state | syncing: nil}

  defp sync_held(%{next_sync: next} = state, _synced) do
    state = %{state | syncing: nil, next_sync: nil}

    case Storage.flush(state.storage) do
      # Nothing buffered: a snapshot install (compaction or received) wrote
      # the log again, durably, with every entry and the hard state.
      {:ok, storage, nil} ->
        confirm(%{state | storage: storage}, Pending.synced(state.wal_pending, next))

      {:ok, storage, _written} ->
        :ok = Synod.Raft.Syncer.sync(state.syncer, next, storage.log_path)
        %{state | storage: storage, syncing: next}

      {:error, why} ->
        get_stuck(state, why)
    end
  end

  defp hand_over(%{syncer: nil} = state, wal_seq, _storage, generation, offset, data),
    do: Wal.append(state.wal, wal_seq, state.segment_dir, generation, offset, data)

  defp hand_over(%{syncer: syncer}, wal_seq, storage, _generation, _offset, _data),
    do: Synod.Raft.Syncer.sync(syncer, wal_seq, storage.log_path)

  # What Pending says is now durable goes to the core (raft_persisted
  # confirms every earlier seq too); the caller drains.
  defp confirm(state, {seq, infos, p}) do
    for {start, bytes} <- infos, do: Emit.fsync(state.group, start, bytes)

    case seq && :synod_nif.raft_persisted(state.raft, seq) do
      nil -> :ok
      :ok -> :ok
      {:error, why} -> exit({:raft_persisted, seq, why})
    end

    %{state | wal_pending: p}
  end

  # A WAL (or syncer) notice already in the mailbox is taken before the Ready the
  # member is about to drain (a selective receive, as the waiting member's
  # await_wal/2), instead of in a turn of its own later (handle_info, then
  # a drain of its own for the messages and entries it releases): the one
  # Ready then carries both. Only while writes are in flight (the receive
  # scans the mailbox).
  defp take_notices(%{wal_pending: %Pending{} = p} = state) do
    if Pending.size(p) > 0 do
      receive do
        {:synod_wal_synced, seq} ->
          # as handle_info/2 does: a syncer's held writes go out at its notice
          state |> confirm(Pending.synced(p, seq)) |> sync_held(seq) |> take_notices()
      after
        0 -> state
      end
    else
      state
    end
  end

  defp take_notices(state), do: state

  defp await_wal(%{wal: wal} = state, seq) do
    receive do
      {:synod_wal_synced, synced} when synced >= seq -> :ok
      {:DOWN, _ref, :process, ^wal, why} -> wal_down(state, why)
    end
  end

  # Without its WAL the member cannot make anything durable: it stops and
  # its supervisor starts it again, from its files, once a new WAL has
  # replayed its records into them.
  # Its log file is closed first, unwritten: a new WAL may be replaying
  # into it already, and what was buffered (a commit index) is no promise.
  defp wal_down(state, why) do
    Logger.warning("raft #{state.group}: the node's WAL went down (#{inspect(why)}); restarting")
    _ = :file.close(state.storage.log)
    exit({:shutdown, {:wal_down, why}})
  end

  defp current_hard_state(state) do
    st = :synod_nif.raft_status(state.raft)
    {st.term, st.vote, st.commit}
  end

  defp entry_map({i, t, ty, d}), do: %{index: i, term: t, type: ty, data: d}
  defp hs_map({t, v, c}), do: %{term: t, vote: v, commit: c}

  # While the storage cannot persist, nothing leaves: every message may
  # depend on a record that is not on disk (Raft resends what is lost).
  # (Most Readys have no early messages, or no later ones: an empty list
  # costs no look at the connected nodes.)
  defp send_out(state, []), do: state
  defp send_out(%{stuck: %{}} = state, _msgs), do: state
  defp send_out(state, msgs), do: send_all(state, msgs)

  # Messages to a node we are not connected to are dropped (Raft resends)
  # and a connection attempt is started in the background, at most once a
  # second per node: a plain send would try to connect on every heartbeat.
  defp send_all(state, msgs) do
    # hidden too: a C node witness is a hidden node
    # (a list and one name per batch: a few nodes, a few messages)
    connected = Node.list([:visible, :hidden])
    name = Synod.Raft.member_name(state.group)

    Enum.reduce(msgs, state, fn {to, payload}, state ->
      case Map.fetch(state.node_of, to) do
        {:ok, node} ->
          dest = {name, node}

          if :lists.member(node, connected) do
            {bin, state} =
              if is_binary(payload), do: {payload, state}, else: chunk_message(state, to, payload)

            if bin, do: send(dest, {:synod_raft, state.group, state.id, node(), bin})
            state
          else
            reconnect(state, node)
          end

        :error ->
          Logger.debug("raft #{state.group}: no node known for member #{to}")
          state
      end
    end)
  end

  # A snapshot chunk the core asked for: its bytes come from our snapshot
  # file (the core holds only the snapshot's metadata), kept open across a
  # transfer's chunks (closed after the last one, or idle for
  # @send_idle_ms). Returns the message (nil: not sent) and the state.

  defp chunk_message(state, to, {:chunk, index, offset, len, size, _template} = chunk) do
    open? = Storage.sending?(state.storage)
    {result, storage} = Storage.send_chunk(state.storage, index, offset, len)
    storage = if offset + len >= size, do: Storage.done_sending(storage), else: storage

    if not open? and Storage.sending?(storage),
      do: Process.send_after(self(), :close_idle_snapshot, @send_idle_ms)

    {chunk_bin(state, to, chunk, result), %{state | storage: storage}}
  end

  defp chunk_bin(state, to, {:chunk, index, offset, len, size, template}, result) do
    fault = chunk_fault(state, offset)

    case result do
      {:ok, _data} when fault == :drop ->
        nil

      {:ok, data} ->
        data = if fault == :corrupt_data, do: damage(data), else: data
        bin = :synod_nif.raft_chunk_encode(template, data)
        bin = if fault == :corrupt, do: damage(bin), else: bin

        if offset + len == size do
          Synod.Telemetry.execute([:synod, :raft, :snapshot, :sent], %{bytes: offset + len}, %{
            group: state.group,
            node: node(),
            to: Map.get(state.node_of, to),
            index: index
          })
        end

        bin

      {:error, why} ->
        # Not sent: the core resends after its timeout.
        Logger.warning(
          "raft #{state.group}: snapshot #{index} chunk at #{offset}: #{inspect(why)}"
        )

        nil
    end
  end

  # Test builds only (MIX_ENV=test): test/elixir/raft_snapshot_fault_test.exs
  # damages the chunks a leader sends by setting the persistent term
  # {Synod.Raft.Member, :chunk_fault} to %{group: Group, fault: Fault, nth:
  # N, count: C | :all, tag: Tag, notify: Pid}: counting this member's chunk
  # sends (per Tag), the Nth and the C - 1 after it (every one from the Nth
  # with :all) are :drop (not sent: lost in transit), :corrupt (one byte of
  # the encoded message flipped after its CRC was computed: damaged in
  # transit, the receiver's decoder refuses it) or :corrupt_data (one byte
  # flipped before encoding: a chunk whose CRC matches its damaged bytes, so
  # only the whole file's checksum refuses it). Pid gets {:chunk_fault,
  # node(), Fault, Offset} for each. Other builds compile this to :none.
  if Mix.env() == :test do
    defp chunk_fault(state, offset) do
      case :persistent_term.get({__MODULE__, :chunk_fault}, nil) do
        %{group: group} = f when group == state.group ->
          n = Process.get({:chunk_fault, f.tag}, 0) + 1
          Process.put({:chunk_fault, f.tag}, n)

          if n >= f.nth and (f.count == :all or n < f.nth + f.count) do
            send(f.notify, {:chunk_fault, node(), f.fault, offset})
            f.fault
          else
            :none
          end

        _ ->
          :none
      end
    end

    defp damage(<<>>), do: <<>>

    defp damage(bin) do
      last = byte_size(bin) - 1
      <<head::binary-size(last), byte>> = bin
      <<head::binary, Bitwise.bxor(byte, 0xFF)>>
    end
  else
    defp chunk_fault(_state, _offset), do: :none
    defp damage(bin), do: bin
  end

  # Received chunks go to the receive file (no fsync: an ack of a chunk
  # that is not the last promises nothing durable; raft.h, SNAPSHOTS IN
  # CHUNKS). A write error fails the transfer: logged once, its file
  # deleted, its later chunks skipped, and at its last chunk the core is told
  # it failed, so the leader starts over (or after its timeout, if the last
  # chunk never comes).
  defp write_chunks(state, []), do: state

  defp write_chunks(state, chunks) do
    Enum.reduce(chunks, state, fn chunk, state ->
      case Storage.write_chunk(state.storage, chunk) do
        {:ok, storage} ->
          %{state | storage: storage}

        {:error, why, storage} ->
          {index, _, _, _, offset, _, _} = chunk

          Logger.warning(
            "raft #{state.group}: snapshot #{index} chunk at #{offset} not written: " <>
              "#{inspect(why)}; this transfer fails and starts over"
          )

          %{state | storage: storage}
      end
    end)
  end

  # After the Ready with the last chunk: fsync the whole file and check its
  # size and checksum, then tell the core. A failure is logged (with its
  # cause) and refused after a backoff: one election timeout, doubled for
  # each failure in a row up to @refuse_max_ms, so a follower that cannot
  # install (a full disk) is retried without the leader streaming the
  # snapshot to it in a loop. Meanwhile the core waits for the answer (it
  # takes no other transfer); then it rejects with offset 0 and the leader
  # starts over. Partial state is never served.
  @refuse_max_ms 10_000

  defp snapshot_received(state, []), do: state

  defp snapshot_received(state, chunks) do
    case List.last(chunks) do
      {index, term, _size, _checksum, _offset, _data, true} ->
        {result, storage} = Storage.finish_receive(state.storage)
        state = %{state | storage: storage}

        if result == :ok do
          case :synod_nif.raft_snapshot_received(state.raft, index, term, true) do
            :ok -> %{state | refused: 0}
            {:error, why} -> exit({:raft_snapshot_received, why})
          end
        else
          delay = refuse_delay(state)

          Logger.warning(
            "raft #{state.group}: snapshot #{index} refused: #{inspect(result)}; " <>
              "the leader sends it again in #{delay} ms"
          )

          ref = make_ref()
          Process.send_after(self(), {:refuse_snapshot, ref}, delay)
          %{state | refusing: {ref, index, term}, refused: state.refused + 1}
        end

      _ ->
        state
    end
  end

  defp refuse_delay(state) do
    base = state.tick_ms * state.election_tick
    min(base * Bitwise.bsl(1, min(state.refused, 16)), max(base, @refuse_max_ms))
  end

  defp reconnect(state, node) do
    now = System.monotonic_time(:millisecond)

    case state.connecting do
      %{^node => at} when now - at < 1_000 ->
        state

      connecting ->
        spawn(fn -> :net_kernel.connect_node(node) end)
        %{state | connecting: Map.put(connecting, node, now)}
    end
  end

  # While the storage cannot persist, committed entries (and a snapshot from
  # the leader) wait in order: applying them would answer callers about
  # entries this member may not have on disk (a one-voter group commits its
  # own entries at once).
  defp apply_ready(%{stuck: %{unapplied: unapplied} = stuck} = state, snapshot, committed),
    do: %{state | stuck: %{stuck | unapplied: [{snapshot, committed} | unapplied]}}

  defp apply_ready(state, snapshot, committed),
    do: state |> restore(snapshot) |> apply_all(committed)

  defp restore(state, nil), do: state

  defp restore(state, {index, _term, _voters, _learners, size, _checksum}) do
    snap = %{index: index, size: size}

    {node_of, sessions, machine_state, witnesses} =
      case load_snapshot(state.storage, snap, state.machine, state.machine_arg) do
        {:ok, loaded} ->
          loaded

        {:error, {:corrupt, _, _, _} = why} ->
          exit({:raft_storage, why})

        {:error, {:unsafe_term, why}} ->
          Logger.error(
            "raft #{state.group}: snapshot at #{index} not decoded (#{inspect(why)}): " <>
              "stopping rather than skip it (docs/reliability.md, \"Safe decoding\")"
          )

          exit({:shutdown, {:unsafe_term, :snapshot, index, why}})
      end

    Logger.info("raft #{state.group}: installed snapshot #{index} (#{size} bytes)")
    Emit.snapshot_installed(state.group, index, size)

    # Proposals the snapshot covers can no longer be matched to a result.
    {covered, pending} = Enum.split_with(state.pending, fn {i, _} -> i <= index end)
    for {_, {_, from, _}} <- covered, do: GenServer.reply(from, {:error, :unknown_outcome})

    %{
      state
      | pending: Map.new(pending),
        machine_state: machine_state,
        node_of: Map.merge(state.node_of, node_of),
        witnesses: witnesses,
        sessions: sessions,
        applied: index,
        since_snapshot: 0
    }
  end

  defp apply_all(state, committed) do
    state = Enum.reduce(committed, state, &apply_entry/2) |> send_replies()
    state = %{state | proposed_at: Emit.commit(state.group, state.proposed_at, committed)}
    serve_ready_reads(state)
  end

  defp apply_entry({index, term, type, data}, state) do
    {waiting, pending} = Map.pop(state.pending, index)

    {state, result} =
      case type do
        @entry_normal ->
          entry =
            case waiting do
              {^term, _from, entry} -> entry
              _ -> decode_entry(state, :entry, index, data)
            end

          apply_normal(state, index, term, entry)

        @entry_conf ->
          {state, :ok}

        _noop ->
          {state, :noop}
      end

    state = %{state | applied: index, since_snapshot: state.since_snapshot + 1}

    case waiting do
      nil ->
        state

      {^term, from, _} ->
        reply(%{state | pending: pending}, from, {:ok, result})

      {_other_term, from, _} ->
        reply(%{state | pending: pending}, from, {:error, :dropped})
    end
  end

  # A command from a Synod.Raft.Pipeline (its tag says it takes batches:
  # `[[:alias | Alias] | {:synod_batch, Tag}]`) is answered with the other
  # answers to the same pipeline in the same applied batch, one message per
  # pipeline (`send_replies/1`) instead of one per command; any other
  # caller at once.
  defp reply(state, {pid, [[:alias | a] | {:synod_batch, _} = tag]}, answer) do
    key = {pid, a}
    %{state | replies: Map.update(state.replies, key, [{tag, answer}], &[{tag, answer} | &1])}
  end

  defp reply(state, from, answer) do
    GenServer.reply(from, answer)
    state
  end

  defp send_replies(%{replies: replies} = state) when map_size(replies) == 0, do: state

  defp send_replies(state) do
    for {{pid, a}, answers} <- state.replies,
        do: send(pid, {[[:alias | a] | :synod_batch], answers})

    %{state | replies: %{}}
  end

  # Entries and snapshot data hold the commands and machine states of users,
  # built by term_to_binary on a member of the group, and may name atoms
  # that exist on the node that made them and on no other. [:safe] alone
  # would refuse them, and a member must not skip a committed entry (its
  # state would part from the others'). So they are decoded by
  # Synod.Raft.SafeTerm: [:safe] first, else only as many new atoms as the
  # node's budget allows (docs/reliability.md, "Safe decoding"). Past the
  # budget the member stops, by name, rather than skip the entry or fill the
  # atom table (which would take the whole VM down); the other members go
  # on. What needs no user atoms (the snapshot's membership) is [:safe].
  defp decode_entry(state, kind, index, bin) do
    case SafeTerm.decode(bin) do
      {:ok, term} ->
        term

      {:error, why} ->
        Logger.error(
          "raft #{state.group}: #{kind} at #{index} not decoded (#{inspect(why)}): " <>
            "stopping rather than skip it (docs/reliability.md, \"Safe decoding\")"
        )

        exit({:shutdown, {:unsafe_term, kind, index, why}})
    end
  end

  # Snapshot data: <<1, len::32, term_to_binary({NodeOf, Sessions,
  # Witnesses}), kind,
  # machine>>, where kind 1 is a machine snapshot that is a binary, stored as
  # is (the store's: no second copy of it is made to wrap it), and kind 0
  # any other term, in term_to_binary form. As iodata, so the machine's
  # binary is written to the file without being copied.
  defp encode_snapshot(state) do
    head = :erlang.term_to_binary({state.node_of, state.sessions, state.witnesses})

    machine =
      case state.machine.snapshot(state.machine_state) do
        bin when is_binary(bin) -> [1, bin]
        term -> [0, :erlang.term_to_binary(term)]
      end

    [<<1, byte_size(head)::32>>, head | machine]
  end

  # A snapshot's data as {NodeOf, Sessions, MachineState, Witnesses}. A
  # machine that restores from pieces (Synod.Raft.Machine's restore_open/2)
  # is fed the file in @restore_piece reads: the data is never whole in
  # memory. Others get the whole data, decoded.
  @restore_piece 1024 * 1024

  defp load_snapshot(storage, snap, machine, arg) do
    if streams?(machine, :restore_open, 2) do
      with {:ok, reader} <- Storage.open_snapshot(storage, snap) do
        try do
          stream_restore(reader, snap.size, machine, arg)
        after
          Storage.close_snapshot(reader)
        end
      end
    else
      with {:ok, data} <- Storage.read_snapshot_data(storage, snap),
           {:ok, {node_of, sessions, machine_snapshot, witnesses}} <- decode_snapshot(data) do
        {:ok, {node_of, sessions, machine.restore(machine_snapshot, arg), witnesses}}
      end
    end
  end

  defp streams?(machine, fun, arity) do
    Code.ensure_loaded(machine)
    function_exported?(machine, fun, arity)
  end

  defp stream_restore(reader, size, machine, arg) do
    with {:ok, <<1, len::32>>} when size >= 6 + len <- Storage.pread_snapshot(reader, 0, 5),
         {:ok, <<head::binary-size(len), kind>>} when kind in [0, 1] <-
           Storage.pread_snapshot(reader, 5, len + 1),
         {:ok, {node_of, sessions, witnesses}} <- snapshot_head(head) do
      at = 6 + len

      machine_state =
        if kind == 1 do
          restorer = machine.restore_open(size - at, arg)
          feed_pieces(reader, at, size, machine, restorer) |> machine.restore_finish(arg)
        else
          with {:ok, bin} <- Storage.pread_snapshot(reader, at, size - at),
               {:ok, term} <- SafeTerm.decode(bin) do
            machine.restore(term, arg)
          end
        end

      case machine_state do
        {:error, {:corrupt, _, _, _}} = error -> error
        {:error, why} when kind == 0 -> {:error, {:unsafe_term, why}}
        _ -> {:ok, {node_of, sessions, machine_state, witnesses}}
      end
    else
      {:error, {:corrupt, _, _, _}} = error -> error
      {:error, why} -> {:error, {:unsafe_term, why}}
      _ -> {:error, {:unsafe_term, :not_a_snapshot}}
    end
  end

  defp feed_pieces(_reader, at, size, _machine, restorer) when at >= size, do: restorer

  defp feed_pieces(reader, at, size, machine, restorer) do
    case Storage.pread_snapshot(reader, at, min(@restore_piece, size - at)) do
      {:ok, piece} ->
        feed_pieces(
          reader,
          at + byte_size(piece),
          size,
          machine,
          machine.restore_feed(restorer, piece)
        )

      {:error, why} ->
        exit({:raft_storage, why})
    end
  end

  # Decoded by Synod.Raft.SafeTerm, as entries are (decode_entry/4).
  defp decode_snapshot(<<1, len::32, head::binary-size(len), kind, machine::binary>>)
       when kind in [0, 1] do
    with {:ok, {node_of, sessions, witnesses}} <- snapshot_head(head),
         {:ok, machine} <- if(kind == 1, do: {:ok, machine}, else: SafeTerm.decode(machine)) do
      {:ok, {node_of, sessions, machine, witnesses}}
    else
      {:ok, _other} -> {:error, {:unsafe_term, :not_a_snapshot}}
      {:error, why} -> {:error, {:unsafe_term, why}}
    end
  end

  defp decode_snapshot(_data), do: {:error, {:unsafe_term, :not_a_snapshot}}

  # A head without witnesses is that of a snapshot written before the kind
  # was group state: no witness recorded.
  defp snapshot_head(head) do
    case SafeTerm.decode(head) do
      {:ok, {node_of, sessions, witnesses}} when is_list(witnesses) ->
        {:ok, {node_of, sessions, witnesses}}

      {:ok, {node_of, sessions}} ->
        {:ok, {node_of, sessions, []}}

      other ->
        other
    end
  end

  # A command is applied once per request id: a client that retries (its
  # leader died mid-call, its entry was dropped) gets the first result.
  defp apply_normal(state, index, term, {:c, cmd, request_id}) do
    case state.sessions do
      {%{^request_id => result}, _} ->
        {state, result}

      _ ->
        {state, result} = run_machine(state, index, term, cmd)
        {remember(state, request_id, result), result}
    end
  end

  defp apply_normal(state, _index, _term, {:peer, id, node}) do
    {learn_node(state, id, node), :ok}
  end

  defp apply_normal(state, _index, _term, {:witness, id, node}) do
    state = learn_node(state, id, node)
    {%{state | witnesses: Enum.uniq([node | state.witnesses])}, :ok}
  end

  # The results of the last @sessions_max requests, part of every snapshot,
  # so every member answers a retry the same way.
  defp remember(%{sessions: {results, order}} = state, request_id, result) do
    order = :queue.in(request_id, order)
    results = Map.put(results, request_id, result)

    if map_size(results) > @sessions_max do
      {{:value, oldest}, order} = :queue.out(order)
      %{state | sessions: {Map.delete(results, oldest), order}}
    else
      %{state | sessions: {results, order}}
    end
  end

  defp run_machine(state, index, term, cmd) do
    try do
      {ms, result} = state.machine.apply(%{index: index, term: term}, cmd, state.machine_state)
      {%{state | machine_state: ms}, result}
    catch
      # An invariant failed inside the NIF (c_src/synod_nif_guard.c): the
      # machine's instance is poisoned, so this member stops and its
      # supervisor starts it again from its files.
      :error, {:invariant, _} = why ->
        :erlang.raise(:error, why, __STACKTRACE__)

      # Deterministic: every member fails the same way on the same command,
      # so every member keeps the state it had. The command's caller is told.
      kind, reason ->
        Logger.error(
          "raft #{state.group}: #{inspect(state.machine)}.apply crashed at #{index}: " <>
            Exception.format(kind, reason, __STACKTRACE__)
        )

        {state, {:error, {:apply_failed, kind, reason}}}
    end
  end

  defp learn_node(%{node_of: node_of} = state, id, node) do
    case node_of do
      %{^id => ^node} -> state
      _ -> %{state | node_of: Map.put(node_of, id, node)}
    end
  end

  defp node_of(_state, 0), do: nil
  defp node_of(state, id), do: Map.get(state.node_of, id)

  defp notify(state, []), do: state

  defp notify(state, events) do
    {view, changes} =
      Enum.reduce(events, {state.view, []}, fn
        {type, cause, term, old_leader, new_leader, old_role, new_role}, {prev, acc} ->
          before = %{role: old_role, leader: node_of(state, old_leader), term: prev.term}
          after_ = %{role: new_role, leader: node_of(state, new_leader), term: term}
          {after_, [{type, cause, before, after_} | acc]}
      end)

    Info.put(state.group, self(), published(view, state))
    changes = Enum.reverse(changes)
    send(state.watches, {:raft_events, changes})
    Emit.raft_changes(state.group, changes)
    state = watch_leader(%{state | view: view})
    if view.role == :leader, do: record_seed_witnesses(state), else: drop_reads(state)
  end

  # Keeps leader_mon on the member of the leader this follower knows of.
  defp watch_leader(%{view: %{role: :follower, leader: node}, leader_mon: {_, node}} = state)
       when node != nil,
       do: state

  defp watch_leader(%{view: view, leader_mon: mon} = state) do
    if mon, do: Process.demonitor(elem(mon, 0), [:flush])

    if view.role == :follower and view.leader not in [nil, node()] do
      ref = Process.monitor({Synod.Raft.member_name(state.group), view.leader})
      %{state | leader_mon: {ref, view.leader}}
    else
      %{state | leader_mon: nil}
    end
  end

  # A leader records the bootstrap witnesses (its :witnesses option) the
  # group has not recorded yet, so members that join later, and snapshots,
  # know them too. Proposed from the mailbox, not from inside the Ready
  # being handled.
  defp record_seed_witnesses(state) do
    if state.seeded_term != state.view.term and state.seed_witnesses -- state.witnesses != [],
      do: send(self(), {:record_witnesses, state.view.term})

    state
  end

  # Reads confirmed by a quorum wait until the machine has applied their index.
  defp read_states(state, []), do: state

  defp read_states(state, reads) do
    ready =
      Enum.flat_map(reads, fn {ctx, index} ->
        case Map.fetch(state.reads, ctx) do
          {:ok, {from, fun}} -> [{index, from, fun}]
          :error -> []
        end
      end)

    reads = Map.drop(state.reads, Enum.map(reads, &elem(&1, 0)))
    serve_ready_reads(%{state | reads: reads, ready_reads: state.ready_reads ++ ready})
  end

  defp serve_ready_reads(%{ready_reads: []} = state), do: state

  defp serve_ready_reads(state) do
    {now, later} =
      Enum.split_with(state.ready_reads, fn {index, _, _} -> index <= state.applied end)

    for {_, from, fun} <- now, do: GenServer.reply(from, run_query(fun, state))
    %{state | ready_reads: later}
  end

  # A member that stops being leader answers its unconfirmed reads at once;
  # the caller retries at the new leader.
  defp drop_reads(%{reads: reads} = state) when map_size(reads) == 0, do: state

  defp drop_reads(state) do
    for {_ctx, {from, _}} <- state.reads, do: GenServer.reply(from, not_leader(state))
    %{state | reads: %{}}
  end

  defp run_query(query, state), do: Synod.Raft.run_query(query, state.machine_state)

  # Subscribers (e.g. the store's watch process) hear that the machine moved
  # on: one message per drained batch, never one per entry.
  defp notify_applied(%{applied: a, notified: a} = state), do: state

  defp notify_applied(state) do
    for {_ref, pid} <- state.subscribers,
        do: send(pid, {:synod_raft_applied, state.group, state.applied})

    %{state | notified: state.applied}
  end

  # -- snapshots ----------------------------------------------------------------

  defp maybe_snapshot(%{since_snapshot: n, snapshot_every: every} = state) when n < every,
    do: state

  defp maybe_snapshot(%{snap_job: {_, _, _}} = state), do: state

  defp maybe_snapshot(state) do
    if streams?(state.machine, :snapshot_open, 1),
      do: start_snapshot(state),
      else: snapshot_whole(state)
  end

  # A machine that streams (Synod.Raft.Machine's snapshot_open/1): its state
  # is frozen here (for the store, a reference on each record: O(keys), no
  # byte copied), the group's part of the snapshot taken with it, and a
  # linked process writes the pieces to snapshot.N.tmp while this member
  # goes on applying. Both parts are of the state at `applied` exactly, so
  # the file is what encode_snapshot/1 would have written here. When it is
  # written, {:snapshot_written, Ref, Result} compacts the core and installs
  # the file (compact_written/4), as snapshot_whole/1 does at once.
  defp start_snapshot(state) do
    head = :erlang.term_to_binary({state.node_of, state.sessions, state.witnesses})
    prefix = [<<1, byte_size(head)::32>>, head, 1]
    machine = state.machine
    writer = machine.snapshot_open(state.machine_state)
    path = Storage.snapshot_tmp_path(state.storage, state.applied)
    member = self()
    ref = make_ref()

    spawn_link(fn ->
      result =
        try do
          Storage.write_snapshot_data(path, prefix, fn -> machine.snapshot_next(writer) end)
        catch
          kind, why -> {:error, {kind, why}}
        after
          machine.snapshot_close(writer)
        end

      send(member, {:snapshot_written, ref, result})
    end)

    %{state | snap_job: {ref, state.applied, path}, since_snapshot: 0}
  end

  defp snapshot_written(%{snap_job: {_, index, path}} = state, result) do
    state = %{state | snap_job: nil}

    case result do
      {:ok, size, crc} when state.stuck == nil ->
        compact_written(state, index, path, size, crc)

      {:ok, _, _} ->
        File.rm(path)
        state

      {:error, why} ->
        File.rm(path)
        Stray.warn("raft #{state.group}: snapshot at #{index} not written: #{inspect(why)}")
        state
    end
  end

  defp compact_written(state, index, path, size, crc) do
    case :synod_nif.raft_compact(state.raft, index, size, crc) do
      {:ok, {^index, term, voters, learners}, after_} ->
        snap = %{
          index: index,
          term: term,
          meta: :erlang.term_to_binary({voters, learners}),
          size: size,
          checksum: crc,
          written: path
        }

        hs = hs_map(current_hard_state(state))

        case Storage.install_snapshot(state.storage, snap, hs, Enum.map(after_, &entry_map/1)) do
          {:ok, storage} ->
            %{state | storage: storage}

          {:error, why} ->
            File.rm(path)
            Stray.warn("raft #{state.group}: snapshot at #{index} not written: #{inspect(why)}")
            state
        end

      {:error, why} ->
        File.rm(path)
        Logger.warning("raft #{state.group}: snapshot at #{index} refused: #{why}")
        state
    end
  end

  defp snapshot_whole(state) do
    data = encode_snapshot(state)
    size = IO.iodata_length(data)

    case :synod_nif.raft_compact(state.raft, state.applied, size, Storage.checksum(data)) do
      {:ok, {index, term, voters, learners}, after_} ->
        snap = %{
          index: index,
          term: term,
          meta: :erlang.term_to_binary({voters, learners}),
          size: size,
          checksum: Storage.checksum(data),
          data: data
        }

        hs = hs_map(current_hard_state(state))

        case Storage.install_snapshot(state.storage, snap, hs, Enum.map(after_, &entry_map/1)) do
          {:ok, storage} ->
            %{state | storage: storage, since_snapshot: 0}

          # The files on disk stay as they were, complete (they hold every
          # entry the snapshot covers): only the compaction did not happen.
          {:error, why} ->
            Stray.warn("raft #{state.group}: snapshot at #{index} not written: #{inspect(why)}")
            %{state | since_snapshot: 0}
        end

      {:error, why} ->
        Logger.warning("raft #{state.group}: snapshot at #{state.applied} refused: #{why}")
        %{state | since_snapshot: 0}
    end
  end

  # -- a full disk ----------------------------------------------------------------
  #
  # A write or fsync that fails (ENOSPC, EDQUOT, EIO) makes the member stuck
  # instead of stopping it (docs/reliability.md, "A full disk"). The core
  # has already taken the Ready as persisted, so from then on nothing may
  # act on it until the records are on disk: the member sends no message
  # (no acknowledgement, no vote), steps no message and no tick (the core
  # stays where it was, like a paused node; the others go on without it),
  # applies nothing (committed entries wait, in order), answers proposals
  # `{:error, :no_space}` at once, and a leader steps down (raft_forget_leader
  # on a leader). Storage keeps the whole buffer; it is written again, from
  # the log's last good length, every 50 ms doubling to 2 s. When a retry
  # succeeds the member applies what waited and takes input again: the
  # leader sends it what it missed (or a snapshot).
  @retry_min 50
  @retry_max 2_000

  defp get_stuck(state, why) do
    Stray.warn(
      "raft #{state.group}: cannot persist (#{inspect(why)}): not acknowledging, " <>
        "refusing proposals, retrying the write"
    )

    Process.send_after(self(), :retry_storage, @retry_min)

    stuck = %{
      reason: why,
      since: System.monotonic_time(:millisecond),
      backoff: @retry_min,
      retries: 0,
      unapplied: []
    }

    state = %{state | stuck: stuck}
    Info.put(state.group, self(), published(state.view, state))

    if state.view.role == :leader do
      # Its proposals may still commit under the next leader, or not: their
      # callers retry with the same request id (applied once).
      :ok = :synod_nif.raft_control(state.raft, :forget_leader, 0)

      for {_, {_, from, _}} <- state.pending,
          do: GenServer.reply(from, {:error, :unknown_outcome})

      drop_reads(%{state | pending: %{}})
    else
      state
    end
  end

  defp retry_storage(%{stuck: nil} = state), do: state

  defp retry_storage(%{stuck: stuck} = state) do
    case durable(state.storage, state) do
      {:ok, storage} ->
        waited = System.monotonic_time(:millisecond) - stuck.since

        Logger.warning(
          "raft #{state.group}: persisting again after #{waited} ms " <>
            "(#{stuck.retries + 1} retries); catching up"
        )

        state = %{state | storage: storage, stuck: nil, next_sync: nil}

        state =
          if state.wal_pending,
            do: confirm(state, Pending.durable(state.wal_pending)),
            else: state

        Info.put(state.group, self(), published(state.view, state))

        stuck.unapplied
        |> Enum.reverse()
        |> Enum.reduce(state, fn {snapshot, committed}, state ->
          apply_ready(state, snapshot, committed)
        end)
        |> drain()

      {:error, why} ->
        Stray.warn(
          "raft #{state.group}: still cannot persist (#{inspect(why)}), " <>
            "#{stuck.retries + 1} retries"
        )

        backoff = min(stuck.backoff * 2, @retry_max)
        Process.send_after(self(), :retry_storage, backoff)
        %{state | stuck: %{stuck | reason: why, backoff: backoff, retries: stuck.retries + 1}}
    end
  end

  defp storage_status(%{stuck: nil}), do: :ok
  defp storage_status(%{stuck: %{reason: why}}), do: {:error, why}

  # What Synod.Raft.Info publishes: the view, marked while the member cannot
  # persist (the router then asks the other members who leads).
  defp published(view, %{stuck: nil}), do: view
  defp published(view, _state), do: Map.put(view, :no_space, true)

  @impl true
  def terminate(_reason, state) do
    Info.delete(state.group, self())
    Storage.close(state.storage)
  end
end
