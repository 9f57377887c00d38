defmodule Synod.Raft do
  @moduledoc """
  Raft groups on a BEAM cluster: a replicated state machine
  (`Synod.Raft.Machine`) run by 3 or 5 voters among any number of nodes,
  with durable logs, fast failover and leader watches.

  A group is a name (an atom). Each member node runs one member of it,
  started by `start_member/1` (under Synod's own supervisor) or by putting
  `{Synod.Raft, opts}` in a supervision tree:

      {Synod.Raft,
       name: :config,
       voters: [:"a@127.0.0.1", :"b@127.0.0.1", :"c@127.0.0.1"],
       machine: {Synod.Raft.KV, []},
       data_dir: "/var/lib/myapp/raft/config"}

  Every bootstrap member must be given the same `voters`. A member restarted
  with state in its `data_dir` recovers from it and ignores `voters`. A node
  that joins a running group starts its member with `join: true` (no voters,
  no state) and is then added by `add_member/3`, which brings it in as a
  learner and promotes it once it has caught up.

  Clients call `command/3` (a change, applied once committed; returns the
  machine's result) and `query/3` (a read) from any node, member or not.
  Both go straight to the leader through the node's leader cache and follow
  redirects at once until their timeout. `Synod.Raft.Pipeline` sends
  commands asynchronously, many in flight, with a bounded window. Leader
  information (`leader/1`, `leader?/1`, `term/1`) and leader watches
  (`add_leader_watch/4`) are answered on the local node; they are also
  available as `Synod.leader/1` and friends.

  See docs/raft.md for the driver's design, its on-disk format and what was
  measured.
  """

  alias Synod.Coord.Options
  alias Synod.Raft.{Info, Router, Watches}

  @type group :: atom()
  @type watch_event :: :become_leader | :become_follower
  @type member_view :: %{role: atom(), leader: node() | nil, term: non_neg_integer()}

  # The options of every routed call (command/3, query/3, call_leader/4).
  # A timeout of 0 (a caller's budget used up) answers {:error, :timeout}.
  @call_schema [
    timeout: [type: :non_neg_integer, default: 5_000],
    call_timeout: [type: {:nil_or, :pos_integer}, default: nil]
  ]

  @defaults [
    join: false,
    tick_ms: 25,
    election_tick: 10,
    heartbeat_tick: 1,
    snapshot_every: 10_000,
    failover_step_ms: 20,
    fast_failover: true,
    quiesce: true,
    batch: true,
    max_inflight: 1024,
    witnesses: [],
    snapshot_chunk: 262_144
  ]

  @doc """
  A child spec for one member of a group on this node.

  Options:
    * `:name` (required) — the group, an atom
    * `:machine` (required) — `module` or `{module, arg}` implementing
      `Synod.Raft.Machine`
    * `:data_dir` (required) — directory for this member's log and snapshots
    * `:voters` — the bootstrap voters (nodes), required unless `join: true`;
      must include this node
    * `:join` — start empty and wait to be added (default `false`)
    * `:tick_ms` — one logical tick (default 25); heartbeats go out every
      `heartbeat_tick` ticks (default 1) and an election timeout is drawn in
      `[election_tick, 2 * election_tick)` ticks (default 10)
    * `:fast_failover` — campaign as soon as the leader's node goes down
      (default `true`); with `false` only the election timeout starts an
      election, as in plain Raft (the benchmark's baseline)
    * `:quiesce` — an idle group stops heartbeating and its members stop
      their tick timers until a command, a read, a message or a node going
      down or up wakes it (default `true`; docs/raft.md, "Quiescing idle
      groups"). A quiesced group notices a dead leader through nodedown
      only (the distribution's own `net_ticktime` for a silent partition)
    * `:failover_step_ms` — delay between the survivors' campaigns when the
      leader's node goes down (default 20)
    * `:snapshot_every` — applied entries between snapshots (default 10000)
    * `:batch` — group commit: batch the requests waiting in the mailbox into
      one fsync (default `true`)
    * `:witnesses` — nodes among `:voters` that are C node witnesses
      (`Synod.CNode` with `witness:`; docs/raft.md "Witness"): they vote
      but never lead and run no member here; shown as witnesses at once,
      and recorded in the group by its first leader, so members started
      later without this option know them too (docs/raft.md, "Which
      members are witnesses: group state"; default `[]`). A witness added
      later is named by `add_member/3` with `kind: :witness`
    * `:max_inflight` — pipelining window: entries the leader sends to a
      follower beyond what it has acknowledged, in as many appends as that
      takes, before it waits for answers (default 1024, at most 1048576)
    * `:snapshot_chunk` — bytes per chunk of a snapshot sent to a follower
      (default 256 KiB, at most 16 MiB; 4 chunks in flight; docs/raft.md,
      "Snapshots in chunks", says why not more)
    * `:log` — `:files` (default: the member fsyncs its own log file) or
      `:wal` (the node's shared write-ahead log, `Synod.Raft.Wal`, fsyncs the
      records of every member on the node in one batch; docs/raft.md, "One
      write-ahead log per node"). The default is the application setting
      `config :synod, raft_log: :files | :wal`, else `:files`
    * `:fsync_writer` — with `log: :files`: the member writes its log file
      and a process beside it fdatasyncs it (`Synod.Raft.Syncer`), while
      the member keeps stepping (its core runs with `async_persist`, which
      holds back what depends on the write, as with `log: :wal`); proposals
      and answers that arrive during the fsync are taken at once instead of
      after it (docs/raft.md, "64 clients (issue 18, branch raft64)").
      Default: the application setting `config :synod, raft_fsync_writer:`,
      else `false` (the member fsyncs in its own process)
    * `:wal_dir` — the node's WAL directory, required with `log: :wal`
      (default: `config :synod, wal_dir: path`); every member on a node must
      name the same one
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    opts = validate!(opts)

    %{
      id: {__MODULE__, opts[:name]},
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc false
  def start_link(opts) do
    opts = validate!(opts)

    Supervisor.start_link(
      [{Watches, name: opts[:name]}, {Synod.Raft.Member, opts}],
      strategy: :rest_for_one,
      name: :"Synod.Raft.Group.#{opts[:name]}"
    )
  end

  @doc "Starts a member on this node under Synod's supervisor (options as `child_spec/1`)."
  @spec start_member(keyword()) :: {:ok, pid()} | {:error, term()}
  def start_member(opts) do
    DynamicSupervisor.start_child(Synod.Raft.Supervisor, child_spec(opts))
  end

  @doc "Stops this node's member of `group` (its files stay)."
  @spec stop_member(group()) :: :ok | {:error, :not_found}
  def stop_member(group), do: stop_registered(:"Synod.Raft.Group.#{group}")

  @doc """
  Starts a member of `group` on every node of `nodes` (the voters), each
  with its data in `Path.join(data_root, "<node>")`.
  """
  @spec start_group(group(), [node()], Path.t(), keyword()) :: :ok | {:error, term()}
  def start_group(group, nodes, data_root, opts \\ []) do
    # Witnesses (C nodes, opts[:witnesses]) are voters that run no member
    # here: they join the group from their own command line.
    voters = nodes ++ Keyword.get(opts, :witnesses, [])
    start_on(nodes, data_root, &start_member([name: group, voters: voters, data_dir: &1] ++ opts))
  end

  @doc false
  # Runs `start.(data_dir)` on every node, with the node's own directory
  # under `data_root`; :ok when every start returned {:ok, pid}.
  def start_on(nodes, data_root, start) do
    results =
      :erpc.multicall(nodes, fn -> start.(Path.join(data_root, Atom.to_string(node()))) end)

    case Enum.reject(results, &match?({:ok, {:ok, _}}, &1)) do
      [] -> :ok
      failures -> {:error, failures}
    end
  end

  @doc false
  # Stops a child of Synod.Raft.Supervisor registered as `name` on this node.
  def stop_registered(name) do
    case Process.whereis(name) do
      nil -> {:error, :not_found}
      pid -> DynamicSupervisor.terminate_child(Synod.Raft.Supervisor, pid)
    end
  end

  @doc """
  Proposes `command`; once it is committed and applied, returns
  `{:ok, result}` with the machine's result.

  The request goes straight to the node this node believes leads (see
  "Routing" in docs/raft.md) and follows `not_leader` redirects at once; it
  waits only while no member knows a leader (an election is running).

  Errors: `{:error, :timeout}` (the outcome is unknown: the command may
  still be applied, once), `{:error, {:unknown_group, group}}` at once when
  no connected node runs a member of `group`, `{:error, reason}` from the
  core (for example `:too_large`).

  Options: `timeout:` (ms, default 5000) what the call waits in total;
  `call_timeout:` (ms, default `timeout`) each round trip, after which the
  request is sent again (under the same request id: it is applied once);
  `local: true` proposes only through this node's member, with no redirect
  (`{:error, {:not_leader, hint}}` if it does not lead): for leader-side
  work that must not be carried out by a member that lost its leadership.
  """
  @spec command(group(), term(), keyword()) :: {:ok, term()} | {:error, term()}
  def command(group, command, opts \\ []) do
    opts = Options.validate!(opts, [{:local, [type: :boolean, default: false]} | @call_schema])
    # One id for every attempt: the group applies the command once however
    # often a lost answer makes us send it again.
    request = {:command, command, make_ref()}

    if opts.local,
      do: call(node(), group, request, opts.timeout),
      else: routed(group, member_name(group), request, opts)
  end

  @typedoc """
  A read of the machine's state: a function of one argument, or
  `{module, function, args}` called as `apply(module, function, [state | args])`.
  Prefer the MFA from scripts and from nodes whose modules the members do
  not have: a closure runs only where its module is loaded.
  """
  @type query_fun :: (term() -> term()) | {module(), atom(), [term()]}

  @doc """
  Runs `query` (see `t:query_fun/0`) on the machine's state and returns
  `{:ok, value}`.

  With `consistency: :linearizable` (the default) it runs on the leader
  after a read-index round (no log entry, no disk write): it sees every
  command committed before the call. With `consistency: :stale` it runs at
  once on this node's member, which may be behind (on a node with no member,
  on the member this node believes leads, without a read-index round).

  Errors: those of `command/3`, and on the node that runs it
  `{:error, {:undefined_module, module}}` (a closure's or an MFA's module is
  not loaded there), `{:error, {:undefined_function, {m, f, arity}}}`,
  `{:error, {:query_failed, kind, reason}}` (it raised). Options:
  `consistency:`, `timeout:`, `call_timeout:`.
  """
  @spec query(group(), query_fun(), keyword()) :: {:ok, term()} | {:error, term()}
  def query(group, query, opts \\ []) do
    query!(query)
    consistency = [type: {:in, [:linearizable, :stale]}, default: :linearizable]
    opts = Options.validate!(opts, [{:consistency, consistency} | @call_schema])

    if opts.consistency == :stale and Info.view(group),
      do: call(node(), group, {:query, query, :stale}, opts.timeout),
      else: routed(group, member_name(group), {:query, query, opts.consistency}, opts)
  end

  defp query!(fun) when is_function(fun, 1), do: :ok
  defp query!({m, f, a}) when is_atom(m) and is_atom(f) and is_list(a), do: :ok

  defp query!(other),
    do:
      raise(
        ArgumentError,
        "query must be a function of one argument or {module, function, args}, got: " <>
          inspect(other)
      )

  @doc false
  # Runs a query on `machine_state` where the member runs (called by
  # Synod.Raft.Member): {:ok, value} or a named error.
  @spec run_query(query_fun(), term()) :: {:ok, term()} | {:error, term()}
  def run_query(query, machine_state) do
    case runnable(query) do
      :ok -> {:ok, apply_query(query, machine_state)}
      {:error, _} = error -> error
    end
  catch
    kind, reason -> {:error, {:query_failed, kind, reason}}
  end

  defp runnable({m, f, a}) do
    cond do
      not Code.ensure_loaded?(m) ->
        {:error, {:undefined_module, m}}

      not function_exported?(m, f, length(a) + 1) ->
        {:error, {:undefined_function, {m, f, length(a) + 1}}}

      true ->
        :ok
    end
  end

  defp runnable(fun) do
    {:module, m} = Function.info(fun, :module)
    if Code.ensure_loaded?(m), do: :ok, else: {:error, {:undefined_module, m}}
  end

  defp apply_query({m, f, a}, state), do: apply(m, f, [state | a])
  defp apply_query(fun, state), do: fun.(state)

  @doc """
  Adds `node` to `group`: records its name (and kind), adds it as a
  learner, then promotes it to voter once it has caught up. The node must
  already run a member started with `join: true`, or be a C node witness
  started with `witness: [group]` (`Synod.CNode`).

  Options: `kind:` `:voter` (default) or `:witness`: a witness's kind is
  group state, recorded in the log (and carried by snapshots) before it is
  added, so every member, after restarts and snapshots, shows it as a
  witness in `status/2` and refuses `transfer_leader/2` to it; `timeout:`
  (ms, default 5000) what the whole call waits.
  """
  @spec add_member(group(), node(), keyword()) :: :ok | {:error, term()}
  def add_member(group, node, opts \\ []) do
    {kind, opts} = Keyword.pop(opts, :kind, :voter)
    id = member_id(node)
    deadline = deadline(opts)

    record =
      case kind do
        :voter -> {:ok, {:peer, id, node}}
        :witness -> {:ok, {:witness, id, node}}
        other -> {:error, {:bad_option, :kind, other}}
      end

    with {:ok, request} <- record,
         {:ok, :ok} <- to_leader(group, request, opts),
         {:ok, _} <- retry_conf(group, :add_learner, id, deadline),
         {:ok, _} <- retry_conf(group, :add_voter, id, deadline) do
      :ok
    end
  end

  @doc """
  Replaces the member `old` of `group` with `new` in one call: records
  `new` (with `kind:`, `:voter` by default, or `:witness`), adds it as a
  learner, waits until it has caught up and promotes it (as `add_member/3`),
  then removes `old`. The group never has fewer voters than before.

  Failure handling: an error before the promotion leaves `old` a voter and
  `new` a learner at most (`{:error, {:add, reason}}`; call again, or
  `remove_member(group, new)`); an error removing `old` after `new` was
  promoted leaves both voters (`{:error, {:remove, reason}}`; call
  `remove_member(group, old)` again). `new == old` is refused at once
  (`{:error, {:same_member, node}}`), as is an `old` that is no member of
  the group (`{:error, {:not_member, old}}`). Options: `kind:`, `timeout:`
  (ms, default 10000) what the whole call waits.
  """
  @spec replace_member(group(), node(), node(), keyword()) :: :ok | {:error, term()}
  def replace_member(group, old, new, opts \\ [])

  def replace_member(_group, same, same, _opts), do: {:error, {:same_member, same}}

  def replace_member(group, old, new, opts) do
    deadline = System.monotonic_time(:millisecond) + Keyword.get(opts, :timeout, 10_000)
    left = fn -> max(deadline - System.monotonic_time(:millisecond), 1) end

    with {:ok, nodes} <- member_nodes(group, left.()),
         true <- old in nodes || {:error, {:not_member, old}},
         :ok <- tag(:add, add_member(group, new, Keyword.put(opts, :timeout, left.()))) do
      tag(:remove, remove_member(group, old, timeout: left.()))
    end
  end

  defp tag(_step, :ok), do: :ok
  defp tag(step, {:error, why}), do: {:error, {step, why}}

  # The group's members (voters and learners) as its leader knows them.
  defp member_nodes(group, timeout) do
    case to_leader(group, :status, timeout: timeout) do
      %{voter_nodes: v, learner_nodes: l} -> {:ok, v ++ l}
      {:error, _} = error -> error
    end
  end

  @doc "Removes `node` from `group`'s members."
  @spec remove_member(group(), node(), keyword()) :: :ok | {:error, term()}
  def remove_member(group, node, opts \\ []) do
    case retry_conf(group, :remove, member_id(node), deadline(opts)) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  @doc """
  Confirms that this node's member is the leader *now*: it answers `:ok`
  only after a quorum acknowledged its leadership after the call arrived
  (a read-index round, no disk write). A leader cut off from its majority
  answers `{:error, {:not_leader, _}}` or times out. Used where an action
  must not be taken on a stale belief in leadership (lease renewals).
  """
  @spec confirm_leader(group(), timeout()) :: :ok | {:error, term()}
  def confirm_leader(group, timeout \\ 5_000) do
    case call(node(), group, {:query, &confirmed/1, :linearizable}, timeout) do
      {:ok, :ok} -> :ok
      {:error, _} = error -> error
    end
  end

  @doc false
  def confirmed(_state), do: :ok

  @doc """
  Subscribes `pid` to this node's member of `group`: it receives
  `{:synod_raft_applied, group, index}` now and whenever the member has
  applied more entries (once per batch), until `pid` exits.
  """
  @spec subscribe_applied(group(), pid()) :: :ok | {:error, :no_member}
  def subscribe_applied(group, pid \\ self()) do
    case call(node(), group, {:subscribe_applied, pid}, 5_000) do
      :ok -> :ok
      {:error, _} -> {:error, :no_member}
    end
  end

  @doc """
  Asks the leader to hand leadership to `node` (a caught-up voter); a
  member the group recorded as a witness is refused with
  `{:error, {:witness, node}}`.
  """
  @spec transfer_leader(group(), node()) :: :ok | {:error, term()}
  def transfer_leader(group, node), do: to_leader(group, {:transfer_leader, node}, [])

  @doc """
  This node's member's status (term, role, leader, indexes, members):
  `members` lists every voter and learner with its kind (`:voter`,
  `:learner` or `:witness`), `witness_nodes` the members that are witnesses;
  `quiesced` whether the group is quiesced here (docs/raft.md, "Quiescing
  idle groups") and `tick_timer` whether the member's tick timer runs.
  """
  @spec status(group(), node()) :: map()
  def status(group, node \\ node()), do: GenServer.call({member_name(group), node}, :status)

  @doc "The group's leader as this node's member knows it, or nil."
  @spec leader(group()) :: node() | nil
  def leader(group), do: (Info.view(group) || %{})[:leader]

  @doc "Whether this node's member is the group's leader."
  @spec leader?(group()) :: boolean()
  def leader?(group), do: match?(%{role: :leader}, Info.view(group))

  @doc "The latest term this node's member knows of (0 if it runs no member)."
  @spec term(group()) :: non_neg_integer()
  def term(group), do: (Info.view(group) || %{term: 0}).term

  @doc """
  Watches this node's member of `group` for leadership changes.

  `target` is a function of 4 arguments, called as
  `fun.(key, event, before, after)`, or a pid, which receives
  `{:synod_leader_watch, group, key, event, before, after}`. `event` is
  `:become_leader` or `:become_follower` (this member is now leader, or is
  now a follower, possibly of a new leader); `before` and `after` are the
  member's whole view before and after the change (see
  `Synod.add_leader_watch/4`).
  `event_type` filters: `:all` (default), `:become_leader` or
  `:become_follower`. A watch under a key already in use replaces it. A bad
  `group`, `target` or `event_type` raises `ArgumentError` naming it.

  Delivery is asynchronous and never delays the member: functions run in a
  process of their own per watch, in order; a function that raises is
  logged and its watch stays.
  """
  @spec add_leader_watch(
          group(),
          term(),
          (term(), watch_event(), member_view(), member_view() -> any()) | pid(),
          :all | watch_event()
        ) ::
          :ok | {:error, :no_member}
  def add_leader_watch(group, key, target, event_type \\ :all) do
    Options.check!(group, :group, :atom)
    Options.check!(target, :target, {:or, [:pid, {:fun, 4}]})
    Options.check!(event_type, :event_type, {:in, [:all, :become_leader, :become_follower]})
    watches_call(group, {:add, key, target, event_type})
  end

  @doc "Removes the watch under `key` (no error if there is none)."
  @spec remove_leader_watch(group(), term()) :: :ok | {:error, :no_member}
  def remove_leader_watch(group, key), do: watches_call(group, {:remove, key})

  @doc "The id of the member a node runs: 62 bits of the MD5 of its name, never 0."
  @spec member_id(node()) :: pos_integer()
  def member_id(node) do
    <<id::62, _::66>> = :erlang.md5(Atom.to_string(node))
    if id == 0, do: 1, else: id
  end

  @doc false
  # The registered name of a group's member. Every message between members
  # is addressed with it, so it is made once per group and then read from
  # :persistent_term (making the atom each time was a tenth of a busy
  # leader's time).
  def member_name(group) do
    key = {__MODULE__, :member_name, group}

    case :persistent_term.get(key, nil) do
      nil ->
        name = :"Synod.Raft.Member.#{group}"
        :persistent_term.put(key, name)
        name

      name ->
        name
    end
  end

  # -- internals ----------------------------------------------------------------

  defp watches_call(group, request) do
    GenServer.call(Watches.name(group), request)
  catch
    :exit, {:noproc, _} -> {:error, :no_member}
  end

  defp deadline(opts),
    do: System.monotonic_time(:millisecond) + Keyword.get(opts, :timeout, 5_000)

  defp to_leader(group, request, opts),
    do: call_leader(group, member_name(group), request, opts)

  @doc false
  # Calls the process registered as `name` on the group's leader node
  # (Synod.Raft.Router): the member itself, or a leader-side service (the
  # store's lease clock, its watch server). Options: timeout:, call_timeout:.
  def call_leader(group, name, request, opts),
    do: routed(group, name, request, Options.validate!(opts, @call_schema))

  # `opts`: the validated map of @call_schema's options.
  defp routed(group, name, request, %{timeout: timeout, call_timeout: call_timeout}) do
    deadline = System.monotonic_time(:millisecond) + timeout
    Router.call(group, name, request, deadline, call_timeout || max(timeout, 1))
  end

  defp call(node, group, request, timeout) do
    case Router.call_name(node, member_name(group), request, timeout) do
      {:error, :call_timeout} -> {:error, :timeout}
      answer -> answer
    end
  end

  defp retry_conf(group, op, id, deadline) do
    timeout = max(deadline - System.monotonic_time(:millisecond), 1)

    case to_leader(group, {:conf_change, op, id}, timeout: timeout) do
      {:error, why} when why in [:conf_pending, :not_caught_up, :transferring] ->
        if System.monotonic_time(:millisecond) < deadline do
          Process.sleep(20)
          retry_conf(group, op, id, deadline)
        else
          {:error, why}
        end

      other ->
        other
    end
  end

  # -- options --------------------------------------------------------------------

  defp validate!(opts) do
    unless Keyword.keyword?(opts), do: raise(ArgumentError, "options must be a keyword list")

    known = [
      :name,
      :machine,
      :data_dir,
      :voters,
      :log,
      :wal_dir,
      :fsync_writer | Keyword.keys(@defaults)
    ]

    case Keyword.keys(opts) -- known do
      [] -> :ok
      unknown -> raise ArgumentError, "unknown options: #{inspect(unknown)}"
    end

    opts =
      @defaults
      |> Keyword.merge(opts)
      |> Keyword.put_new_lazy(:log, fn -> Application.get_env(:synod, :raft_log, :files) end)
      |> Keyword.put_new_lazy(:wal_dir, fn -> Application.get_env(:synod, :wal_dir) end)
      |> Keyword.put_new_lazy(:fsync_writer, fn ->
        Application.get_env(:synod, :raft_fsync_writer, false)
      end)

    check!(opts, :name, &is_atom/1, "an atom")
    opts = Keyword.update!(opts, :machine, &machine!/1)
    check!(opts, :data_dir, &(is_binary(&1) and &1 != ""), "a non-empty path string")
    check!(opts, :join, &is_boolean/1, "a boolean")
    check!(opts, :log, &(&1 in [:files, :wal]), ":files or :wal")

    if opts[:log] == :wal,
      do:
        check!(
          opts,
          :wal_dir,
          &(is_binary(&1) and &1 != ""),
          "a non-empty path string with log: :wal (or config :synod, wal_dir: path)"
        )

    check!(opts, :batch, &is_boolean/1, "a boolean")
    check!(opts, :fsync_writer, &is_boolean/1, "a boolean")
    check!(opts, :fast_failover, &is_boolean/1, "a boolean")
    check!(opts, :quiesce, &is_boolean/1, "a boolean")

    check!(
      opts,
      :witnesses,
      &(is_list(&1) and Enum.all?(&1, fn n -> is_atom(n) end)),
      "a list of nodes"
    )

    for key <- [:tick_ms, :snapshot_every, :failover_step_ms] do
      check!(opts, key, &(is_integer(&1) and &1 > 0), "a positive integer")
    end

    check!(opts, :election_tick, &(is_integer(&1) and &1 >= 2), "an integer >= 2")

    check!(
      opts,
      :max_inflight,
      &(is_integer(&1) and &1 in 1..1_048_576),
      "an integer in 1..1048576"
    )

    check!(
      opts,
      :snapshot_chunk,
      &(is_integer(&1) and &1 in 1..16_777_216),
      "an integer in 1..16777216"
    )

    check!(
      opts,
      :heartbeat_tick,
      &(is_integer(&1) and &1 >= 1 and &1 < opts[:election_tick]),
      "an integer in 1..election_tick-1"
    )

    unless opts[:join] do
      check!(
        opts,
        :voters,
        &(is_list(&1) and &1 != [] and Enum.all?(&1, fn n -> is_atom(n) end) and
            length(Enum.uniq(&1)) == length(&1) and length(&1) <= 64),
        "a list of distinct nodes (at most 64), required unless join: true"
      )
    end

    opts
  end

  defp check!(opts, key, ok?, what) do
    value = Keyword.get(opts, key)

    unless value != nil and ok?.(value),
      do: raise(ArgumentError, "#{key} must be #{what}, got: #{inspect(value)}")
  end

  defp machine!({mod, _arg} = m) when is_atom(mod), do: loaded_machine!(mod) && m
  defp machine!(mod) when is_atom(mod) and mod != nil, do: loaded_machine!(mod) && {mod, []}

  defp machine!(other),
    do: raise(ArgumentError, "machine must be a module or {module, arg}, got: #{inspect(other)}")

  defp loaded_machine!(mod) do
    Code.ensure_loaded(mod)

    for {f, a} <- [init: 1, apply: 3, snapshot: 1, restore: 2],
        not function_exported?(mod, f, a) do
      raise ArgumentError,
            "machine #{inspect(mod)} does not implement Synod.Raft.Machine (#{f}/#{a} missing)"
    end

    true
  end
end
