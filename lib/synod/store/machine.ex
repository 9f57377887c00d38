defmodule Synod.Store.Machine do
  @moduledoc """
  The replicated store as a `Synod.Raft.Machine`: its state is the C store
  (`c_src/store.c`, through the NIF), its commands are the binaries built by
  `Synod.Store.Command`.

      store = Synod.Store.Machine.init([])
      {store, {:ok, 1, {:put, nil}}} =
        Synod.Store.Machine.apply(%{index: 1, term: 1}, Synod.Store.Command.put("a", "1"), store)
      {[%{key: "a", value: "1", version: 1}], 1, false} =
        Synod.Store.Machine.range(store, Synod.Store.Command.range("a"))

  The state is a NIF resource that `apply/3` changes in place and returns
  again. That is safe under Raft: the driver applies each committed entry
  once, in order, and never goes back to an older state (it restores a
  snapshot instead). Only the member process should touch it: long calls
  (ranges, revokes, snapshots) run on dirty schedulers holding the store's
  lock.

  ## Results of `apply/3`

  Every command answers `{:ok, revision, payload}` with the store's revision
  after it, or `{:error, reason}`, in which case nothing changed:

    * put: `{:put, prev_kv | nil}` (prev only with `prev_kv: true`);
    * delete: `{:delete, deleted_count, prev_kvs}`;
    * range: `{:range, kvs, count, more?}`;
    * txn: `{:txn, succeeded?, [op_result]}`, one result per op run;
    * lease grant: `{:lease_granted, id, ttl_ms}`;
    * lease revoke: `{:lease_revoked, id, keys_deleted}`;
    * compact: `{:compacted, revision}`.

  A kv is `%{key:, value:, create_revision:, mod_revision:, version:, lease:}`.
  Errors: `:lease_not_found`, `:lease_exists`, `:duplicate_key`,
  `:future_revision`, `{:compacted, compact_revision}`, `:too_large`,
  `:nomem` (a member that sees it must not move on: retry or stop), and for
  a malformed command `:invalid`, `:truncated`, `:trailing` or `:version`.
  """

  @behaviour Synod.Raft.Machine

  alias Synod.Store.Command

  @typedoc "The store: a NIF resource changed in place by `apply/3`."
  @opaque t :: reference()
  @type kv :: %{
          key: binary(),
          value: binary(),
          create_revision: non_neg_integer(),
          mod_revision: non_neg_integer(),
          version: non_neg_integer(),
          lease: non_neg_integer()
        }
  @type event :: {:put | :delete, pos_integer(), kv(), kv() | nil}
  @type option ::
          {:history_max_events, non_neg_integer()}
          | {:history_max_bytes, non_neg_integer()}
          | {:history_prev_kv, boolean()}

  @doc """
  A fresh store. Options (every member of a group must use the same, and a
  snapshot carries them): `history_max_events` (default 10,000; 0 keeps no
  history), `history_max_bytes` (default 16 MiB), `history_prev_kv` (default
  true: events carry the version before the change).
  """
  @impl true
  @spec init([option()] | map()) :: t()
  def init(opts) do
    {:ok, store} = checked(fn -> :synod_nif.store_new(options!(opts)) end)
    store
  end

  @doc "Applies one committed command; see the module doc for the results."
  @impl true
  @spec apply(Synod.Raft.Machine.meta(), term(), t()) :: {t(), term()}
  def apply(_meta, command, store) when is_binary(command),
    do: {store, :synod_nif.store_apply(store, command)}

  def apply(_meta, _command, store), do: {store, {:error, :invalid}}

  @doc "The whole state as a binary (`docs/store.md` has the format)."
  @impl true
  @spec snapshot(t()) :: binary()
  def snapshot(store), do: :synod_nif.store_snapshot(store)

  @doc """
  The store a snapshot holds. A corrupt snapshot raises `ArgumentError`
  rather than start a member from a wrong state.
  """
  @impl true
  @spec restore(binary(), term()) :: t()
  def restore(snapshot, _arg) when is_binary(snapshot) do
    case :synod_nif.store_restore(snapshot) do
      {:ok, store} -> store
      {:error, why} -> raise ArgumentError, "store snapshot refused: #{inspect(why)}"
    end
  end

  # Bytes per streamed piece: one dirty NIF call each (a copy and BLAKE2b).
  @piece 1024 * 1024

  @doc """
  Freezes the store for a streamed snapshot: a reference on every record
  (about 8 bytes per key, 32 per history event; no key or value copied).
  The store may be applied to while the pieces are taken.
  """
  @impl true
  @spec snapshot_open(t()) :: reference()
  def snapshot_open(store) do
    case :synod_nif.store_snapshot_open(store) do
      {:ok, writer} -> writer
      {:error, why} -> raise ArgumentError, "store snapshot not started: #{inspect(why)}"
    end
  end

  @doc "The next piece (about 1 MiB) of the snapshot's bytes, or `:eof`."
  @impl true
  @spec snapshot_next(reference()) :: binary() | :eof
  def snapshot_next(writer) do
    case :synod_nif.store_snapshot_next(writer, @piece) do
      {:error, why} -> raise ArgumentError, "store snapshot piece: #{inspect(why)}"
      piece -> piece
    end
  end

  @doc "Lets go of a snapshot writer's references."
  @impl true
  @spec snapshot_close(reference()) :: :ok
  def snapshot_close(writer), do: :synod_nif.store_snapshot_close(writer)

  @doc "Starts restoring a snapshot of `size` bytes, fed in pieces."
  @impl true
  @spec restore_open(non_neg_integer(), term()) :: reference()
  def restore_open(size, _arg) do
    case :synod_nif.store_restore_open(size) do
      {:ok, restorer} -> restorer
      {:error, why} -> raise ArgumentError, "store snapshot refused: #{inspect(why)}"
    end
  end

  @doc """
  Feeds the next piece. A corrupt snapshot raises `ArgumentError` at the
  first piece that shows it (what was built is freed).
  """
  @impl true
  @spec restore_feed(reference(), binary()) :: reference()
  def restore_feed(restorer, piece) do
    case :synod_nif.store_restore_feed(restorer, piece) do
      :ok -> restorer
      {:error, why} -> raise ArgumentError, "store snapshot refused: #{inspect(why)}"
    end
  end

  @doc "The restored store, once every piece was fed and every check passed."
  @impl true
  @spec restore_finish(reference(), term()) :: t()
  def restore_finish(restorer, _arg) do
    case :synod_nif.store_restore_finish(restorer) do
      {:ok, store} -> store
      {:error, why} -> raise ArgumentError, "store snapshot refused: #{inspect(why)}"
    end
  end

  @doc """
  A range read on the state as it is (for `Synod.Raft.query/3`): `request`
  is a `Synod.Store.Command.range/2` binary. Returns `{kvs, count, more?}`.
  """
  @spec range(t(), binary()) :: {[kv()], non_neg_integer(), boolean()}
  def range(store, request), do: checked(fn -> :synod_nif.store_range(store, request) end)

  @doc """
  Runs a read-only transaction (`Synod.Store.Command.txn/3` terms whose ops
  are all ranges) on the state as it is, for `Synod.Raft.query/3`: the same
  answer as `apply/3` of that txn, `{:ok, revision, {:txn, ok?, results}}`,
  with no change. Raises `ArgumentError` for an op that writes.
  """
  @spec read_txn(t(), list(), list(), list()) ::
          {:ok, non_neg_integer(), term()} | {:error, term()}
  def read_txn(store, compares, success, failure) do
    unless read_only?(success) and read_only?(failure),
      do: raise(ArgumentError, "read_txn/4 takes range ops only")

    # A txn that writes nothing leaves the store as it was (docs/store.md).
    :synod_nif.store_apply(store, Command.txn(compares, success, failure))
  end

  @doc "Whether every op of a txn branch is a range read."
  @spec read_only?(list()) :: boolean()
  def read_only?(ops) when is_list(ops),
    do: Enum.all?(ops, &(match?({:range, _}, &1) or match?({:range, _, _}, &1)))

  @doc "The store's revision."
  @spec revision(t()) :: non_neg_integer()
  def revision(store), do: info(store).revision

  @doc """
  The change events from revision `from` on, in revision order, at most
  `limit` of them (0: no limit) but never part of a revision. Returns
  `{:ok, events, next}` (resume from `next`) or `{:error, {:compacted, rev}}`
  when `from` is at or below the compaction revision.
  """
  @spec events_since(t(), pos_integer(), non_neg_integer()) ::
          {:ok, [event()], pos_integer()} | {:error, {:compacted, non_neg_integer()}}
  def events_since(store, from, limit),
    do: checked(fn -> :synod_nif.store_events_since(store, from, limit) end)

  @doc "Every lease in id order: `{id, ttl_ms, keys}` with its keys in key order."
  @spec leases(t()) :: [{pos_integer(), pos_integer(), [binary()]}]
  def leases(store), do: checked(fn -> :synod_nif.store_leases(store) end)

  @doc "One lease: `{:ok, ttl_ms, key_count}` or `{:error, :lease_not_found}`."
  @spec lease(t(), pos_integer()) ::
          {:ok, pos_integer(), non_neg_integer()} | {:error, :lease_not_found}
  def lease(store, id), do: checked(fn -> :synod_nif.store_lease(store, id) end)

  @doc "Revision, compaction revision, counts and configuration."
  @spec info(t()) :: map()
  def info(store), do: checked(fn -> :synod_nif.store_info(store) end)

  defp options!(opts) when is_map(opts), do: options!(Map.to_list(opts))

  defp options!(opts) when is_list(opts) do
    unless Keyword.keyword?(opts),
      do: raise(ArgumentError, "store options must be a keyword list or a map")

    known = [:history_max_events, :history_max_bytes, :history_prev_kv]

    case Enum.find(opts, fn {k, _} -> k not in known end) do
      nil ->
        Map.new(opts)

      {k, _} ->
        raise ArgumentError, "unknown store option #{inspect(k)}; known: #{inspect(known)}"
    end
  end

  defp options!(_), do: raise(ArgumentError, "store options must be a keyword list or a map")

  # The NIF raises {badarg, Message}; callers get ArgumentError(Message).
  defp checked(fun) do
    fun.()
  catch
    :error, {:badarg, message} -> raise ArgumentError, message
  end
end
