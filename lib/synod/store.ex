defmodule Synod.Store do
  @moduledoc """
  A replicated, linearizable key-value store with leases, transactions and
  watches — etcd's v3 model — on a Raft group (`Synod.Raft`), surviving the
  loss of a minority of its members. The state machine is C
  (`c_src/store.c`, see docs/store.md); this module is the service around
  it: requests routed to the leader, lease countdowns on the leader's clock,
  and watches.

      nodes = [:"a@127.0.0.1", :"b@127.0.0.1", :"c@127.0.0.1"]
      :ok = Synod.Store.start(:cfg, nodes, "/var/lib/myapp/store")
      {:ok, rev, nil} = Synod.Store.put(:cfg, "feature/x", "on")
      {:ok, %{value: "on", mod_revision: ^rev}} = Synod.Store.get(:cfg, "feature/x")
      {:ok, lease, 10_000} = Synod.Store.grant(:cfg, 10_000)
      {:ok, _, nil} = Synod.Store.put(:cfg, "workers/me", "busy", lease: lease)
      {:ok, ref} = Synod.Store.watch(:cfg, "workers/", prefix: true)

  A store is a group name (an atom). Keys are binaries of 1..4096 bytes,
  values binaries of at most 1 MiB. Every change bumps one store-wide
  revision; each key has `create_revision`, `mod_revision`, `version` and
  `lease`. Malformed arguments raise `ArgumentError` (they never reach the
  log). Every call takes `timeout:` (ms, default 5000); `{:error, :timeout}`
  means the outcome is unknown.

  **Leases.** Time never enters the replicated state. The leader's node
  keeps each lease's deadline on its monotonic clock and, when one passes,
  proposes the lease's revoke through the log (deleting its keys in one
  revision). A new leader restarts every countdown at the full TTL, so a
  lease lives at least its TTL. `keep_alive/3` answers `{:ok, ttl}` only
  after the leader restarted the countdown *and* confirmed with a quorum
  that it still leads: a holder that sends a renewal at time `t` and gets
  `{:ok, ttl}` owns the lease until at least `t + ttl`.

  **Watches.** `watch/3` delivers every change to a key, prefix or range from
  a revision on, in revision order, to the caller. It is served by the store
  member on the caller's node if there is one, else on the leader's node.
  """

  alias Synod.Store.{Command, Leases, Machine, Watcher}
  alias Synod.Telemetry.Emit

  @type store :: atom()
  @type kv :: Machine.kv()
  @type event :: Machine.event()

  # The options of every call that go to Synod.Raft.
  @call_opts [:timeout, :call_timeout]

  @doc """
  A child spec for this node's member of a store. Options: `:name`,
  `:voters`, `:data_dir`, `:join` and the other options of
  `Synod.Raft.child_spec/1` (the machine is the store's), plus `:store`,
  the options of `Synod.Store.Machine.init/1` (history limits; the same on
  every member).
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    {store_opts, raft_opts} = Keyword.pop(opts, :store, [])
    raft = Synod.Raft.child_spec([machine: {Machine, store_opts}] ++ raft_opts)

    %{
      id: {__MODULE__, opts[:name]},
      start: {__MODULE__, :start_link, [opts[:name], raft]},
      type: :supervisor
    }
  end

  @doc false
  def start_link(name, raft) do
    Supervisor.start_link([raft, {Leases, name: name}, {Watcher, name: name}],
      strategy: :rest_for_one,
      name: :"Synod.Store.Sup.#{name}"
    )
  end

  @doc "Starts this node's member of a store under Synod's supervisor (options of `child_spec/1`)."
  @spec start_member(keyword()) :: {:ok, pid()} | {:error, term()}
  def start_member(opts),
    do: DynamicSupervisor.start_child(Synod.Raft.Supervisor, child_spec(opts))

  @doc "Stops this node's member of `store` (its files stay)."
  @spec stop_member(store()) :: :ok | {:error, :not_found}
  def stop_member(store), do: Synod.Raft.stop_registered(:"Synod.Store.Sup.#{store}")

  @doc """
  Starts a member of `store` on every node of `nodes` (the voters), each
  with its data in `Path.join(data_root, "<node>")`.
  """
  @spec start(store(), [node()], Path.t(), keyword()) :: :ok | {:error, term()}
  def start(store, nodes, data_root, opts \\ []) do
    Synod.Raft.start_on(
      nodes,
      data_root,
      &start_member([name: store, voters: nodes, data_dir: &1] ++ opts)
    )
  end

  # -- keys ---------------------------------------------------------------------

  @doc """
  Puts `value` under `key`. Returns `{:ok, revision, prev}` where `prev` is
  the previous kv when `prev_kv: true` was given, else `nil`. Options:
  `lease:` (a granted lease id; the key goes with the lease), `prev_kv:`.
  """
  @spec put(store(), binary(), binary(), keyword()) ::
          {:ok, pos_integer(), kv() | nil} | {:error, term()}
  def put(store, key, value, opts \\ []) do
    {cmd, opts} = build(opts, [:lease, :prev_kv], &Command.put(key, value, &1))

    with {:ok, rev, {:put, prev}} <- command(store, :put, cmd, opts), do: {:ok, rev, prev}
  end

  @doc """
  The kv under `key`, or `nil`. `consistency: :linearizable` (default)
  reads on the leader after a read-index round; `:stale` reads this node's
  member at once.
  """
  @spec get(store(), binary(), keyword()) :: {:ok, kv() | nil} | {:error, term()}
  def get(store, key, opts \\ []) do
    with {:ok, kvs, _count, _more} <-
           range(store, key, Keyword.take(opts, [:consistency, :timeout])) do
      {:ok, List.first(kvs)}
    end
  end

  @doc """
  A range read: `key` alone, `prefix: true`, or `range_end:` (a binary, or
  `:end`). Also `limit:`, `keys_only:`, `count_only:`, `consistency:`.
  Returns `{:ok, kvs, count, more?}` with kvs in key order.
  """
  @spec range(store(), binary(), keyword()) ::
          {:ok, [kv()], non_neg_integer(), boolean()} | {:error, term()}
  def range(store, key, opts \\ []) do
    {request, opts} =
      build(opts, [:prefix, :range_end, :limit, :keys_only, :count_only], &Command.range(key, &1))

    with {:ok, {kvs, count, more}} <- query(store, {Machine, :range, [request]}, opts),
         do: {:ok, kvs, count, more}
  end

  @doc """
  Deletes `key` (or `prefix: true` / `range_end:`). Returns
  `{:ok, revision, deleted, prev_kvs}` (`prev_kvs` with `prev_kv: true`).
  """
  @spec delete(store(), binary(), keyword()) ::
          {:ok, pos_integer(), non_neg_integer(), [kv()]} | {:error, term()}
  def delete(store, key, opts \\ []) do
    {cmd, opts} = build(opts, [:prefix, :range_end, :prev_kv], &Command.delete(key, &1))

    with {:ok, rev, {:delete, n, prev}} <- command(store, :delete, cmd, opts),
         do: {:ok, rev, n, prev}
  end

  @doc """
  A transaction: if every compare holds, the `success` ops run, else the
  `failure` ops; atomically, as one revision. Compares and ops are those of
  `Synod.Store.Command.txn/3`. Returns `{:ok, revision, succeeded?, results}`
  with one result per op run.

  A read-only transaction (compares and `{:range, ...}` ops, no put or
  delete in either branch) does not go through the log: it runs on the
  leader after a read-index round (no log entry, no disk write), and
  `revision` is the revision it read at. It takes `consistency: :stale`
  like `range/3`. Transactions that write are Raft commands.
  """
  @spec txn(store(), list(), list(), list(), keyword()) ::
          {:ok, pos_integer(), boolean(), list()} | {:error, term()}
  def txn(store, compares, success, failure \\ [], opts \\ []) do
    cmd = Command.txn(compares, success, failure)

    result =
      if Machine.read_only?(success) and Machine.read_only?(failure),
        do: read_txn(store, compares, success, failure, opts),
        else: command(store, :txn, cmd, opts)

    with {:ok, rev, {:txn, ok?, results}} <- result, do: {:ok, rev, ok?, results}
  end

  defp read_txn(store, compares, success, failure, opts) do
    with {:ok, read} <- query(store, {Machine, :read_txn, [compares, success, failure]}, opts),
         do: read
  end

  @doc "The store's current revision (linearizable)."
  @spec revision(store(), keyword()) :: {:ok, non_neg_integer()} | {:error, term()}
  def revision(store, opts \\ []) do
    query(store, {Machine, :revision, []}, opts)
  end

  # -- leases -------------------------------------------------------------------

  @doc "Grants a lease of `ttl_ms` milliseconds: `{:ok, lease_id, ttl_ms}`."
  @spec grant(store(), pos_integer(), keyword()) ::
          {:ok, pos_integer(), pos_integer()} | {:error, term()}
  def grant(store, ttl_ms, opts \\ []) when is_integer(ttl_ms) and ttl_ms > 0 do
    _ = Command.lease_grant(0, ttl_ms)
    leases(store, {:grant, ttl_ms}, opts)
  end

  @doc """
  Restarts a lease's countdown at its full TTL: `{:ok, ttl_ms}` once the
  leader did so and confirmed with a quorum that it still leads, or
  `{:error, :lease_not_found}` (expired or revoked).
  """
  @spec keep_alive(store(), pos_integer(), keyword()) :: {:ok, pos_integer()} | {:error, term()}
  def keep_alive(store, lease_id, opts \\ []) when is_integer(lease_id) and lease_id > 0,
    do: leases(store, {:keep_alive, lease_id}, opts)

  @doc "Revokes a lease now, deleting its keys: `{:ok, revision}`."
  @spec revoke(store(), pos_integer(), keyword()) :: {:ok, pos_integer()} | {:error, term()}
  def revoke(store, lease_id, opts \\ []) when is_integer(lease_id) and lease_id > 0,
    do: leases(store, {:revoke, lease_id}, opts)

  @doc "Every lease, `{id, ttl_ms, keys}` in id order (linearizable)."
  @spec leases(store(), keyword()) ::
          {:ok, [{pos_integer(), pos_integer(), [binary()]}]} | {:error, term()}
  def leases(store, opts \\ []) when is_list(opts), do: query(store, {Machine, :leases, []}, opts)

  defp leases(store, request, opts) do
    Emit.store_request(store, elem(request, 0), fn ->
      store
      |> Synod.Raft.call_leader(Leases.name(store), request, Keyword.take(opts, @call_opts))
      |> named(store)
    end)
  end

  # -- watches ------------------------------------------------------------------

  @doc """
  Watches `key` (or `prefix: true`, or `range_end:`) from revision `from:`
  (default: the next revision). The caller receives
  `{:synod_watch, ref, events}` (each `{:put | :delete, revision, kv,
  prev_kv}`, in revision order), or `{:synod_watch, ref, {:error,
  {:compacted, revision}}}` when the history it needs is gone (the watch
  ends). `ref` monitors the process serving the watch: `{:DOWN, ref, ...}`
  means it went away; watch again `from:` the revision after the last one
  received.
  """
  @spec watch(store(), binary(), keyword()) :: {:ok, reference()} | {:error, term()}
  def watch(store, key, opts \\ []) when is_binary(key) and key != "" do
    range =
      cond do
        opts[:prefix] -> {:prefix, key}
        opts[:range_end] -> {:range, key, opts[:range_end]}
        true -> {:key, key}
      end

    with {:ok, from} <- watch_from(store, opts),
         {:ok, pid} <- watcher(store) do
      ref = Process.monitor(pid)
      :ok = GenServer.call(pid, {:watch, ref, self(), range, from})
      {:ok, ref}
    end
  end

  @doc "Ends a watch; messages already sent may still arrive."
  @spec unwatch(store(), reference()) :: :ok
  def unwatch(store, ref) do
    Process.demonitor(ref, [:flush])

    with {:ok, pid} <- watcher(store) do
      GenServer.call(pid, {:unwatch, ref})
    end

    :ok
  end

  defp watch_from(store, opts) do
    case Keyword.fetch(opts, :from) do
      {:ok, rev} when is_integer(rev) and rev > 0 ->
        {:ok, rev}

      {:ok, other} ->
        raise ArgumentError, "from must be a positive revision, got: #{inspect(other)}"

      :error ->
        with {:ok, rev} <- revision(store, opts), do: {:ok, rev + 1}
    end
  end

  defp watcher(store) do
    case Process.whereis(Watcher.name(store)) do
      pid when is_pid(pid) -> {:ok, pid}
      nil -> Synod.Raft.call_leader(store, Watcher.name(store), :pid, []) |> named(store)
    end
  end

  # -- internals ------------------------------------------------------------------

  # Splits a call's options into the command builder's and ours (timeout,
  # consistency) and builds the command.
  defp build(opts, command_keys, builder) do
    {command_opts, rest} = Keyword.split(opts, command_keys)
    {builder.(command_opts), rest}
  end

  defp command(store, kind, cmd, opts) do
    Emit.store_request(store, kind, fn ->
      case Synod.Raft.command(store, cmd, Keyword.take(opts, @call_opts)) do
        {:ok, {:ok, _rev, _payload} = result} -> result
        {:ok, {:error, _} = error} -> error
        {:error, _} = error -> named(error, store)
      end
    end)
  end

  # The kind of a read is the Machine function it runs (read_txn: :txn).
  defp query(store, {Machine, fun, _} = query, opts) do
    Emit.store_request(store, if(fun == :read_txn, do: :txn, else: fun), fn ->
      case Synod.Raft.query(store, query, Keyword.take(opts, [:consistency | @call_opts])) do
        {:ok, {:error, _} = error} -> error
        {:ok, value} -> {:ok, value}
        {:error, _} = error -> named(error, store)
      end
    end)
  end

  # The store's name for a group that no connected node runs.
  defp named({:error, {:unknown_group, store}}, store), do: {:error, {:unknown_store, store}}
  defp named(other, _store), do: other
end
