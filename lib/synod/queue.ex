defmodule Synod.Queue do
  @moduledoc """
  FIFO queues on a replicated store (`Synod.Store`): strictly in revision
  order, each value to exactly one consumer.

  Every function takes the store (its group name, an atom) first, then the
  queue's name (a binary of 1..255 bytes). Queues need no creation; one
  store holds any number of them. Values are any terms, stored in the
  external term format with deterministic encoding (the same term gives
  the same bytes); an encoded value over 1,044,480 bytes is refused with
  `{:error, {:value_too_large, bytes, 1_044_480}}`. Values are decoded
  with `:erlang.binary_to_term(bytes, [:safe])` (no atoms are created from
  stored data); one that does not decode so (bytes not written by
  `enqueue/4`, or holding an atom this node does not know) is handed out
  as `{:undecodable, bytes}`, so it is neither lost nor blocks the queue.

      {:ok, _key, rev} = Synod.Queue.enqueue(:jobs, "mail", %{to: "a@b"})
      {:ok, %{value: %{to: "a@b"}, revision: ^rev}} = Synod.Queue.dequeue(:jobs, "mail", timeout: 5_000)

  ## Two modes

    * **Plain** (`dequeue(store, name, opts)`): the value is deleted by the
      txn that hands it out, so it goes to exactly one consumer and never
      comes back. If that txn's outcome is unknown (`{:error, :timeout}`
      from the store, e.g. during a leader change) the value may be gone
      without anyone having it: *at most once*.
    * **Acknowledged** (`dequeue(store, name, visibility_timeout: ms)`):
      the value is claimed by a key on a fresh store lease of `ms` and stays
      in the queue; `ack(store, name, receipt)` deletes it, on the condition that
      the claim is still held under that lease (the lease id is a fencing
      token). If the consumer does not ack in time, the store's leader
      expires the lease, the claim vanishes and the value is handed out
      again, ahead of every newer value: *at least once*. A lease lives at
      least `ms` (a new leader restarts every countdown).

  ## Order

  `enqueue` gives a value the next sequence number of its queue by a
  compare-and-swap on the queue's counter in the same txn, so the keys of a
  queue sort in the order the enqueues were committed (their revisions).
  `dequeue` returns the oldest value that is not claimed. In plain mode the
  values are therefore taken strictly in revision order across all
  consumers: `dequeue_revision` order equals `revision` order. In
  acknowledged mode a value whose claim expired comes back at its old place,
  so it may be handed out after newer ones were.

  `dequeue` blocks on a store watch of the queue (no polling) until a value
  is there or `timeout:` ms have passed. Concurrent producers of one queue
  contend on its counter (losers retry at once with the counter's new
  state, read in the same round trip). A plain dequeue is one txn that
  takes whatever value is first when the store applies it, so plain
  consumers do not race; acknowledged consumers (and plain ones while
  values are claimed) contend on the oldest free value.
  docs/coordination.md has the key layout and the figures.
  """

  alias Synod.Coord.{Deadline, Options, Recipe, Stores, Watch}
  alias Synod.Store
  alias Synod.Store.Command

  @max_value 1_044_480

  @typedoc "Proof of a claim in acknowledged mode: the value's key suffix and the claim's lease."
  @type receipt :: {:receipt, binary(), pos_integer()}
  @typedoc """
  A dequeued value: its key, value, `revision` (the enqueue's revision),
  `dequeue_revision` (the revision of the txn that took or claimed it) and
  `receipt` (nil in plain mode).
  """
  @type item :: %{
          key: binary(),
          value: term(),
          revision: pos_integer(),
          dequeue_revision: pos_integer(),
          receipt: receipt() | nil
        }

  @call [
    timeout: [type: :timeout, default: 5_000],
    call_timeout: [type: :pos_integer, default: 5_000]
  ]

  @doc """
  Appends `value` (any term) to the queue `name`. Returns the value's key
  and the revision the enqueue was committed at, or `{:error, reason}`:
  `{:value_too_large, bytes, max}`, `{:unknown_store, store}`, `:timeout`
  (outcome unknown).

  Options: `ttl:` ms after which the value is deleted if still queued (a
  store lease; default none); `timeout:` in total (ms, default 5000);
  `call_timeout:` each store round trip (ms, default 5000).
  """
  @spec enqueue(Store.store(), binary(), term(), keyword()) ::
          {:ok, binary(), pos_integer()} | {:error, term()}
  def enqueue(store, name, value, opts \\ []) do
    name!(store, name)
    opts = Options.validate!(opts, [{:ttl, [type: {:nil_or, {:ms, 1}}, default: nil]} | @call])
    call = call(opts)
    bytes = :erlang.term_to_binary(value, [:deterministic])

    with :ok <- Stores.check(store),
         :ok <- size_ok(bytes),
         {:ok, lease} <- value_lease(store, opts.ttl, call) do
      put_opts = if lease, do: [lease: lease], else: []
      # The key is the sequence number and a token of this call: the token
      # recognises this enqueue's own write if the store applied it unheard.
      token = :rand.bytes(8)
      key = fn seq -> items(name) <> Recipe.seq_suffix(seq) <> token end
      build = fn seq -> {[], [{:put, key.(seq), bytes, put_opts}], 1, [{:range, key.(seq)}]} end

      landed = fn [{:range, kvs, _, _}], _seq ->
        case kvs do
          [%{create_revision: rev}] -> {:ok, rev}
          [] -> false
        end
      end

      case Recipe.append(store, counter(name), build, landed, call) do
        {:ok, rev, seq} ->
          {:ok, key.(seq), rev}

        other ->
          Recipe.drop_lease(store, lease, call)
          error(other)
      end
    end
  end

  defp decode(bytes) do
    :erlang.binary_to_term(bytes, [:safe])
  rescue
    ArgumentError -> {:undecodable, bytes}
  end

  defp size_ok(bytes) when byte_size(bytes) <= @max_value, do: :ok
  defp size_ok(bytes), do: {:error, {:value_too_large, byte_size(bytes), @max_value}}

  defp value_lease(_store, nil, _call), do: {:ok, nil}

  defp value_lease(store, ttl, call) do
    with {:ok, id, _} <- Store.grant(store, ttl, Deadline.opts(call)), do: {:ok, id}
  end

  @doc """
  Takes the oldest value of the queue `name`, waiting for one to arrive.
  Returns `{:error, :empty}` when none came in time.

  Options: `timeout:` how long to wait in total (ms or `:infinity`; default
  5000; 0 does not wait); `visibility_timeout:` ms selects acknowledged
  mode (the claim's lease; the item carries a `receipt` for `ack/4`);
  `call_timeout:` each store round trip (ms, default 5000).
  """
  @spec dequeue(Store.store(), binary(), keyword()) ::
          {:ok, item()} | {:error, :empty | term()}
  def dequeue(store, name, opts \\ []) do
    name!(store, name)

    opts =
      Options.validate!(opts, [
        {:visibility_timeout, [type: {:nil_or, {:ms, 1}}, default: nil]} | @call
      ])

    with :ok <- Stores.check(store) do
      s = %{
        store: store,
        name: name,
        vis: opts.visibility_timeout,
        lease: nil,
        call: Deadline.budget(:infinity, opts.call_timeout),
        deadline: Deadline.new(opts.timeout)
      }

      # The head this process's last take saw behind the value it took (left
      # only by a take that went past claims): tried at once, without a scan
      # (the take's compares decide, and a stale guess learns the real head
      # from its failure branch). Else a plain dequeue is one txn that takes
      # the first value if no value is claimed (`take_first/1`).
      case {Process.delete(head_key(s)), s.vis} do
        {nil, nil} -> if Process.get(empty_key(s)), do: look_first(s), else: take_first(s)
        {nil, _ms} -> take(s)
        {kv, _} -> take(s, kv)
      end
    end
  end

  defp head_key(s), do: {__MODULE__, :head, s.store, s.name}

  # Set when this process's last plain take found the queue empty: its next
  # dequeue looks first with a read-only txn (read-index, no log entry), so
  # a consumer polling an empty queue (`timeout: 0`) does not write the log.
  defp empty_key(s), do: {__MODULE__, :empty, s.store, s.name}

  defp look_first(s) do
    {items, claims} = {items(s.name), claims(s.name)}

    case Store.txn(
           s.store,
           [{:count, claims, [prefix: true], :==, 0}],
           [{:range, items, range_end: Command.prefix_end(items), limit: 1, keys_only: true}],
           Recipe.page_reads(items, claims, nil, true),
           Deadline.opts(s.call)
         ) do
      {:ok, rev, true, [{:range, [], _, _}]} -> wait(s, rev)
      {:ok, _rev, true, [{:range, [_], _, _}]} -> take_first(s)
      {:ok, rev, false, pages} -> retake(s, pages, rev)
      error -> error
    end
  end

  # A take's success branch read the pages behind the value it took: the
  # next free one (keys only) is the next dequeue's first guess.
  defp behind(s, pages) do
    case Recipe.free_in(pages, items(s.name), claims(s.name)) do
      {:ok, kv} -> Process.put(head_key(s), kv)
      _none_or_more -> :ok
    end
  end

  defp pages_behind(s, kv),
    do:
      Recipe.page_reads(items(s.name), claims(s.name), Recipe.suffix(kv.key, items(s.name)), true)

  # Plain mode in one round trip and one log entry: if the queue holds no
  # claim (no acknowledged consumer holds a value), the first value in key
  # order, which is the oldest, is deleted and returned by the store
  # (DELETE's FIRST flag, docs/store.md); the whole decision is the txn's,
  # so no read comes before it. An empty queue answers with the revision it
  # was empty at (the txn changed nothing). If claims exist, the failure
  # branch reads the head of the line as `retake/3` wants it.
  defp take_first(s) do
    {items, claims} = {items(s.name), claims(s.name)}

    case Store.txn(
           s.store,
           [{:count, claims, [prefix: true], :==, 0}],
           [{:delete, items, prefix: true, first: true, prev_kv: true}],
           Recipe.page_reads(items, claims, nil, true),
           Deadline.opts(s.call)
         ) do
      {:ok, rev, true, [{:delete, 1, [taken]}]} ->
        Process.delete(empty_key(s))
        {:ok, item(taken, rev, nil)}

      {:ok, rev, true, [{:delete, 0, []}]} ->
        Process.put(empty_key(s), true)
        wait(s, rev)

      {:ok, rev, false, pages} ->
        retake(s, pages, rev)

      error ->
        error
    end
  end

  # Linearizable looks only: a consumer's own last take is usually not yet
  # applied on its node's member, so a stale look would offer the value it
  # just took and cost a failed txn (a log write) to learn better.
  defp take(s) do
    case Recipe.first_free(s.store, items(s.name), claims(s.name), s.call, keys_only: true) do
      {:ok, kv} -> take(s, kv)
      {:none, rev} -> wait(s, rev)
      error -> give_up(s, error)
    end
  end

  defp wait(s, rev) do
    case Watch.await_change(s.store, root(s.name), rev, s.deadline, Deadline.opts(s.call)) do
      :changed ->
        if s.vis, do: take(s), else: take_first(s)

      :timeout ->
        Recipe.drop_lease(s.store, s.lease && elem(s.lease, 0), s.call)
        depth(s.store, s.name, 0)
        {:error, :empty}

      error ->
        give_up(s, error)
    end
  end

  # A take that lost its race read the head of the queue as it is now in
  # its failure branch: the next candidate, or nothing free at `rev`.
  defp retake(s, pages, rev) do
    case Recipe.free_in(pages, items(s.name), claims(s.name)) do
      {:ok, kv} -> take(s, kv)
      :none -> wait(s, rev)
      {:more, _} -> take(s)
    end
  end

  # One txn: the value unchanged and unclaimed -> delete it (its value comes
  # back as the delete's prev_kv). The scan read keys only.
  defp take(%{vis: nil} = s, kv) do
    claim = claim_key(s.name, Recipe.suffix(kv.key, items(s.name)))
    compares = [{:mod_revision, kv.key, :==, kv.mod_revision}, {:absent, claim}]
    pages = Recipe.page_reads(items(s.name), claims(s.name), nil, true)

    case Store.txn(
           s.store,
           compares,
           [{:delete, kv.key, prev_kv: true} | pages_behind(s, kv)],
           pages,
           Deadline.opts(s.call)
         ) do
      {:ok, rev, true, [{:delete, 1, [taken]} | behind]} ->
        behind(s, behind)
        {:ok, item(taken, rev, nil)}

      {:ok, rev, false, pages} ->
        retake(s, pages, rev)

      error ->
        error
    end
  end

  defp take(s, kv) do
    with {:ok, s} <- fresh_lease(s) do
      {lease, _} = s.lease
      suffix = Recipe.suffix(kv.key, items(s.name))
      claim = claim_key(s.name, suffix)
      compares = [{:mod_revision, kv.key, :==, kv.mod_revision}, {:absent, claim}]
      put = [{:put, claim, "", [lease: lease]}, {:range, kv.key} | pages_behind(s, kv)]

      failure = [
        {:range, claim},
        {:range, kv.key} | Recipe.page_reads(items(s.name), claims(s.name), nil, true)
      ]

      case Store.txn(s.store, compares, put, failure, Deadline.opts(s.call)) do
        {:ok, rev, true, [_put, {:range, [taken], _, _} | behind]} ->
          behind(s, behind)
          {:ok, item(taken, rev, {:receipt, suffix, lease})}

        # The claim is ours: the store applied this txn before, unheard.
        {:ok, _, false,
         [{:range, [%{lease: ^lease, mod_revision: rev}], _, _}, {:range, [taken], _, _} | _]} ->
          {:ok, item(taken, rev, {:receipt, suffix, lease})}

        {:ok, rev, false, [_claim, _item | pages]} ->
          retake(s, pages, rev)

        {:error, :lease_not_found} ->
          take(%{s | lease: nil}, kv)

        error ->
          give_up(s, error)
      end
    end
  end

  defp fresh_lease(s) do
    with {:ok, lease} <- Recipe.fresh_lease(s.store, s.lease, s.vis, s.call),
         do: {:ok, %{s | lease: lease}}
  end

  defp give_up(s, error) do
    Recipe.drop_lease(s.store, s.lease && elem(s.lease, 0), s.call)
    error
  end

  defp item(kv, rev, receipt),
    do: %{
      key: kv.key,
      value: decode(kv.value),
      revision: kv.create_revision,
      dequeue_revision: rev,
      receipt: receipt
    }

  @doc """
  Acknowledges a value taken in acknowledged mode: deletes it if the claim
  of `receipt` is still held. `{:error, :lease_expired}` when the
  visibility timeout ran out first (the value was or will be handed out
  again). Options: `timeout:`, `call_timeout:` as `enqueue/4`.
  """
  @spec ack(Store.store(), binary(), receipt(), keyword()) ::
          :ok | {:error, :lease_expired | term()}
  def ack(store, name, receipt, opts \\ []) do
    name!(store, name)
    Options.check!(receipt, :receipt, {:custom, &receipt?/1, "a queue receipt"})
    {:receipt, suffix, lease} = receipt
    call = call(Options.validate!(opts, @call))
    claim = claim_key(name, suffix)
    item = items(name) <> suffix

    with :ok <- Stores.check(store) do
      case Store.txn(
             store,
             [{:lease, claim, :==, lease}],
             [{:delete, claim}, {:delete, item}],
             [],
             Deadline.opts(call)
           ) do
        {:ok, _, true, _} ->
          Recipe.drop_lease(store, lease, call)
          :ok

        {:ok, _, false, _} ->
          # Only an ack with this lease removes its claim, and only expiry
          # ends the lease: if the lease still lives, this ack was applied
          # before, unheard.
          case Store.revoke(store, lease, Deadline.opts(call)) do
            {:ok, _} -> :ok
            {:error, :lease_not_found} -> {:error, :lease_expired}
            error -> error
          end

        error ->
          error
      end
    end
  end

  defp receipt?({:receipt, suffix, lease}),
    do: is_binary(suffix) and byte_size(suffix) == 16 and is_integer(lease) and lease > 0

  defp receipt?(_), do: false

  @doc """
  How many values the queue `name` holds, claimed ones included (a
  linearizable count). Options: `timeout:`, `call_timeout:`. Emits
  `[:synod, :queue, :depth]` (`%{depth}`, `%{store, queue}`), as does a
  `dequeue/3` that found the queue empty (depth 0): the two places where
  the depth is known without a read of its own.
  """
  @spec count(Store.store(), binary(), keyword()) :: {:ok, non_neg_integer()} | {:error, term()}
  def count(store, name, opts \\ []) do
    name!(store, name)
    call = call(Options.validate!(opts, @call))

    with :ok <- Stores.check(store),
         {:ok, _, count, _} <-
           Store.range(
             store,
             items(name),
             [prefix: true, count_only: true] ++ Deadline.opts(call)
           ) do
      depth(store, name, count)
      {:ok, count}
    end
  end

  # [:synod, :queue, :depth] where the depth is known without extra reads:
  # count/3, and a dequeue that found the queue empty (0).
  defp depth(store, name, depth),
    do:
      Synod.Telemetry.execute([:synod, :queue, :depth], %{depth: depth}, %{
        store: store,
        queue: name
      })

  # The budget of a function that does not wait: every round trip bounded
  # by call_timeout and by what is left of the total timeout.
  defp call(opts), do: Deadline.budget(opts.timeout, opts.call_timeout)

  # ---- layout: synod/q/<name segment> then i<seq><token> values, c<seq><token> claims,
  #      n the counter ----

  defp root(name), do: "synod/q/" <> Recipe.segment(name)
  defp items(name), do: root(name) <> "i"
  defp claims(name), do: root(name) <> "c"
  defp claim_key(name, suffix), do: claims(name) <> suffix
  defp counter(name), do: root(name) <> "n"

  defp name!(store, name) do
    Options.check!(store, :store, :atom)
    Options.check!(name, :name, {:binary, 255})
  end

  defp error({:refused, _}), do: {:error, :refused}
  defp error(error), do: error
end
