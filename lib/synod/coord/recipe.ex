defmodule Synod.Coord.Recipe do
  @moduledoc """
  The key-layout recipes `Synod.Queue` and `Synod.Tasks` share, built on
  `Synod.Store` transactions and leases only (docs/coordination.md explains
  the layouts). Nothing here keeps state between calls except a
  per-process cache of sequence counters, which is only a hint: every use
  of it is checked by a compare in the txn that uses it.

    * sequenced append (`append/5`): entries of one sequence get keys
      `<prefix><seq::64>`, seq = 1, 2, 3 ... assigned by a compare-and-swap
      on a counter key inside the txn that writes the entry, so key order
      is commit (revision) order;
    * first free entry (`first_free/5`): the lowest entry key
      `<items><suffix>` that has no twin `<claims><suffix>` (a claim is a
      key on a store lease, so it vanishes when the lease expires).

  Waiting for a change is `Synod.Coord.Watch.await_change/5`. The last
  argument of each function is the call's `t:Synod.Coord.Deadline.budget/0`:
  every round trip is bounded by its `call_timeout` and what is left of it.
  """

  alias Synod.Coord.Deadline
  alias Synod.Store
  alias Synod.Store.Command

  @page 64

  @doc "A name as a self-delimiting key segment: 16-bit length, then the bytes."
  @spec segment(binary()) :: binary()
  def segment(name), do: <<byte_size(name)::16, name::binary>>

  @doc "The 8-byte, bytewise-sortable suffix of sequence number `seq`."
  @spec seq_suffix(pos_integer()) :: binary()
  def seq_suffix(seq), do: <<seq::64>>

  @doc "The sequence number a key of `prefix` carries (its first 8 bytes after the prefix)."
  @spec seq_of(binary(), binary()) :: pos_integer()
  def seq_of(key, prefix) do
    size = byte_size(prefix)
    <<^prefix::binary-size(size), seq::64, _::binary>> = key
    seq
  end

  @doc "What follows `prefix` in `key`."
  @spec suffix(binary(), binary()) :: binary()
  def suffix(key, prefix),
    do: binary_part(key, byte_size(prefix), byte_size(key) - byte_size(prefix))

  # ---- sequenced append ----

  @doc """
  Appends one or more entries under the next sequence numbers of `counter`
  in one txn. `build.(first_seq)` returns `{compares, ops, count, reads}`:
  extra compares that must hold, the writes, how many sequence numbers they
  use, and reads for the failure branch. The counter is compared on its
  mod_revision, so two appends never get the same numbers and the numbers
  follow revision order.

  A txn can be applied although its caller never heard (the store then
  answers a later, identical txn with a failed compare): `landed.(results,
  first_seq)` looks at the failure branch's reads (after the counter's)
  and returns `{:ok, revision}` when they show this append's own writes,
  else false.

  Returns `{:ok, revision, first_seq}`, `{:refused, results}` when one of
  the extra compares failed, or `{:error, reason}`.
  """
  @spec append(
          atom(),
          binary(),
          (pos_integer() -> {list(), list(), pos_integer(), [Command.op()]}),
          (list(), pos_integer() -> {:ok, pos_integer()} | false),
          Deadline.budget()
        ) ::
          {:ok, pos_integer(), pos_integer()} | {:refused, list()} | {:error, term()}
  def append(store, counter, build, landed, opts) do
    cache = {__MODULE__, store, counter}
    {mod, last} = Process.get(cache, {0, 0})
    do_append(store, counter, {build, landed}, opts, cache, mod, last, 0)
  end

  defp do_append(_store, _counter, _funs, _opts, _cache, _mod, _last, 1_000),
    do: {:error, :contention}

  defp do_append(store, counter, {build, landed} = funs, opts, cache, mod, last, tries) do
    first = last + 1
    {compares, ops, count, reads} = build.(first)

    result =
      Store.txn(
        store,
        [{:mod_revision, counter, :==, mod} | compares],
        [{:put, counter, <<last + count::64>>} | ops],
        [{:range, counter} | reads],
        Deadline.opts(opts)
      )

    case result do
      {:ok, rev, true, _} ->
        Process.put(cache, {rev, last + count})
        {:ok, rev, first}

      {:ok, _rev, false, [{:range, kvs, _, _} | rest]} ->
        {mod2, last2} = counter_state(kvs)
        Process.put(cache, {mod2, last2})

        case landed.(rest, first) do
          {:ok, rev} -> {:ok, rev, first}
          false when mod2 == mod -> {:refused, rest}
          false -> do_append(store, counter, funs, opts, cache, mod2, last2, tries + 1)
        end

      {:error, _} = error ->
        Process.delete(cache)
        error
    end
  end

  defp counter_state([]), do: {0, 0}
  defp counter_state([%{mod_revision: mod, value: <<last::64>>}]), do: {mod, last}

  # ---- first free entry ----

  @doc """
  The lowest key under `items` whose suffix has no key under `claims`:
  `{:ok, item_kv}`, or `{:none, revision}` with a revision to watch from
  (every change after it is seen by a watch `from: revision + 1`).

  Each page of items and the page of claims beside it are read in one
  read-only txn (read-index on the leader: no log entry, no fsync), so an
  item is taken as free only if it had no claim at the revision it was
  read at. The txn that takes it compares both again, so what a scan shows
  is only a candidate.

  `keys_only: true` reads the items without their values (the take reads
  the value it takes).
  """
  @spec first_free(atom(), binary(), binary(), Deadline.budget(), keyword()) ::
          {:ok, map()} | {:none, non_neg_integer()} | {:error, term()}
  def first_free(store, items, claims, opts, read \\ []),
    do: scan(store, {items, claims, Keyword.get(read, :keys_only, false)}, nil, nil, opts)

  # `first` is the revision of this scan's first page: a change after it is
  # seen by a watch from first + 1, one at or before it by the pages.
  defp scan(store, {items, claims, keys_only} = where, after_suffix, first, opts) do
    reads = page_reads(items, claims, after_suffix, keys_only)

    case Store.txn(store, [], reads, [], Deadline.opts(opts)) do
      {:ok, rev, true, results} ->
        case free_in(results, items, claims) do
          {:ok, kv} -> {:ok, kv}
          :none -> {:none, first || rev}
          {:more, suffix} -> scan(store, where, suffix, first || rev, opts)
        end

      {:error, _} = error ->
        error
    end
  end

  @doc """
  The two range reads of one page of `items` and of `claims` after
  `after_suffix` (nil: from the start), for a txn. `first_free/5` runs them
  as a read-only txn; a take txn puts them in its failure branch, so a
  take that lost a race learns the new head of the line from its own
  answer (`free_in/3`) without another read. Claims are read keys only;
  items too with `keys_only`.
  """
  @spec page_reads(binary(), binary(), binary() | nil, boolean()) :: [Command.op()]
  def page_reads(items, claims, after_suffix \\ nil, keys_only \\ false) do
    page = fn prefix, keys_only ->
      {:range, from(prefix, after_suffix),
       range_end: Command.prefix_end(prefix), limit: @page, keys_only: keys_only}
    end

    [page.(items, keys_only), page.(claims, true)]
  end

  @doc """
  What the results of `page_reads/4` (the first two of `results`) show:
  `{:ok, item_kv}` the first free item, `:none` when no item is free at
  the revision they were read at, or `{:more, suffix}` when the answer
  lies past these pages (scan on after `suffix`).
  """
  @spec free_in(list(), binary(), binary()) :: {:ok, map()} | :none | {:more, binary()}
  def free_in([{:range, ikvs, _, imore}, {:range, ckvs, _, cmore} | _], items, claims) do
    claimed = MapSet.new(ckvs, &suffix(&1.key, claims))
    # Claims past the last one read are unknown: only items up to it count.
    known = if cmore, do: suffix(List.last(ckvs).key, claims), else: nil

    free =
      Enum.find(ikvs, fn kv ->
        s = suffix(kv.key, items)
        (known == nil or s <= known) and not MapSet.member?(claimed, s)
      end)

    cond do
      free != nil ->
        {:ok, free}

      not imore and known == nil ->
        :none

      true ->
        last_item = if imore, do: suffix(List.last(ikvs).key, items)
        {:more, min_suffix(last_item, known)}
    end
  end

  defp from(prefix, nil), do: prefix
  defp from(prefix, suffix), do: prefix <> suffix <> <<0>>

  defp min_suffix(nil, b), do: b
  defp min_suffix(a, nil), do: a
  defp min_suffix(a, b), do: min(a, b)

  @doc """
  A lease of `ttl` for a claim about to be made: `current` (`{id,
  granted_at}` or nil) if it was granted less than a quarter of `ttl` ago,
  else a new one (the old one revoked). A claim so gets nearly its whole
  TTL even after lost races.
  """
  @spec fresh_lease(atom(), {pos_integer(), integer()} | nil, pos_integer(), Deadline.budget()) ::
          {:ok, {pos_integer(), integer()}} | {:error, term()}
  def fresh_lease(store, {id, granted} = current, ttl, opts) do
    if System.monotonic_time(:millisecond) - granted < div(ttl, 4) do
      {:ok, current}
    else
      drop_lease(store, id, opts)
      fresh_lease(store, nil, ttl, opts)
    end
  end

  def fresh_lease(store, nil, ttl, opts) do
    with {:ok, id, _} <- Store.grant(store, ttl, Deadline.opts(opts)),
         do: {:ok, {id, System.monotonic_time(:millisecond)}}
  end

  @doc "Best-effort revoke of a lease nobody needs any more (it would expire anyway)."
  @spec drop_lease(atom(), non_neg_integer() | nil, Deadline.budget()) :: :ok
  def drop_lease(_store, id, _opts) when id in [nil, 0], do: :ok

  def drop_lease(store, id, opts) do
    _ = Store.revoke(store, id, Deadline.opts(opts))
    :ok
  end
end
