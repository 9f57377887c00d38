defmodule Synod.Store.Command do
  @moduledoc """
  Builds the store's command binaries from friendly terms.

  A command is what the Raft log carries and what `Synod.Store.Machine`
  applies: a compact binary (format in `docs/store.md`) that the C core
  decodes and checks. This module only encodes; it validates eagerly and
  raises `ArgumentError` naming the bad argument, so a malformed command
  never reaches the log.

      iex> Synod.Store.Command.put("config/a", "1")
      <<1, 1, 0, 8, "config/a", 1, "1", 0>>

  ## Keys and ranges

  Keys are binaries of 1..4096 bytes, values binaries of at most 1 MiB
  (`docs/store.md`). Deletes and range reads take one key, or a range:

    * `range_end: binary` — the half-open range `[key, range_end)`;
    * `range_end: :end` — every key from `key` on;
    * `prefix: true` — every key that starts with `key`.

  ## Transactions

  `txn(compares, success, failure)` runs `success` if every compare holds,
  else `failure`, atomically and as one revision. Compares:

    * `{:exists, key}` / `{:absent, key}`;
    * `{:version | :create_revision | :mod_revision | :lease, key, op, integer}`
      where `op` is `:==`, `:!=`, `:<` or `:>` (an absent key has 0 in each);
    * `{:value, key, op, binary}` (bytewise; false for an absent key);
    * `{:count, key, range_opts, op, integer}`: the number of keys in the
      range of `key` and `range_opts` (`prefix: true`, `range_end:`, or `[]`
      for the key alone) against the integer; the store counts at most
      integer + 1 keys, so the compare costs what it compares, not the
      range.

  Ops: `{:put, key, value}`, `{:put, key, value, opts}`, `{:delete, key}`,
  `{:delete, key, opts}`, `{:range, key}`, `{:range, key, opts}` with the
  options of `put/3`, `delete/2` and `range/2`. One branch may not write a
  key twice (the store answers `{:error, :duplicate_key}`).

  A delete with `first: true` deletes only the first key of its range in
  key order (none if the range is empty): with `prev_kv: true` a txn takes
  the head of a sequence and returns it, in one log entry (the queue's
  dequeue). The duplicate-key rule still treats it as covering its whole
  range.
  """

  import Bitwise

  @version 1
  @put 1
  @delete 2
  @range 3
  @txn 4
  @lease_grant 5
  @lease_revoke 6
  @compact 7

  @prev_kv 0x01
  @keys_only 0x02
  @count_only 0x04
  @first 0x08

  @max_key 4096
  @max_value 1_048_576
  @max_ops 128
  @max_compares 128
  @max_ttl_ms 1 <<< 40
  @num_max 1 <<< 62

  @targets %{
    exists: 0,
    version: 1,
    create_revision: 2,
    mod_revision: 3,
    value: 4,
    lease: 5,
    count: 6
  }
  @results %{==: 0, >: 1, <: 2, !=: 3}

  @type key :: binary()
  @type range_option :: {:range_end, binary() | :end} | {:prefix, boolean()}
  @type put_option :: {:lease, non_neg_integer()} | {:prev_kv, boolean()}
  @type delete_option :: range_option() | {:prev_kv, boolean()} | {:first, boolean()}
  @type range_read_option ::
          range_option()
          | {:limit, non_neg_integer()}
          | {:keys_only, boolean()}
          | {:count_only, boolean()}
  @type compare_op :: :== | :!= | :< | :>
  @type compare ::
          {:exists, key()}
          | {:absent, key()}
          | {:version | :create_revision | :mod_revision | :lease, key(), compare_op(),
             non_neg_integer()}
          | {:value, key(), compare_op(), binary()}
          | {:count, key(), [range_option()], compare_op(), non_neg_integer()}
  @type op ::
          {:put, key(), binary()}
          | {:put, key(), binary(), [put_option()]}
          | {:delete, key()}
          | {:delete, key(), [delete_option()]}
          | {:range, key()}
          | {:range, key(), [range_read_option()]}

  @doc """
  A put of `value` under `key`. Options: `lease:` a lease id (0 or absent: no
  lease; a key put without a lease leaves the one it had), `prev_kv: true` to
  get the previous version back.
  """
  @spec put(key(), binary(), [put_option()]) :: binary()
  def put(key, value, opts \\ []), do: <<@version, @put, put_body(key, value, opts)::binary>>

  @doc """
  A delete of `key`, or of a range (see the module doc); `prev_kv: true`
  returns what went; `first: true` deletes only the range's first key.
  """
  @spec delete(key(), [delete_option()]) :: binary()
  def delete(key, opts \\ []), do: <<@version, @delete, delete_body(key, opts)::binary>>

  @doc """
  A range read through the log (linearizable). Options: the range options,
  `limit:` (0: none), `keys_only: true`, `count_only: true`. The same binary
  is the request of `Synod.Store.Machine.range/2`.
  """
  @spec range(key(), [range_read_option()]) :: binary()
  def range(key, opts \\ []), do: <<@version, @range, range_body(key, opts)::binary>>

  @doc "A transaction: `success` if every compare holds, else `failure`."
  @spec txn([compare()], [op()], [op()]) :: binary()
  def txn(compares, success, failure \\ []) do
    compares = list!(compares, "compares", @max_compares)
    success = list!(success, "success ops", @max_ops)
    failure = list!(failure, "failure ops", @max_ops)

    IO.iodata_to_binary([
      @version,
      @txn,
      varint(length(compares)),
      Enum.map(compares, &compare/1),
      branch(success),
      branch(failure)
    ])
  end

  @doc """
  Grants a lease of `ttl_ms` (1..2^40) under `id`; id 0 lets the store pick
  the next free id (returned in the result).
  """
  @spec lease_grant(non_neg_integer(), pos_integer()) :: binary()
  def lease_grant(id, ttl_ms) do
    id = num!(id, "lease id")

    unless is_integer(ttl_ms) and ttl_ms >= 1 and ttl_ms <= @max_ttl_ms,
      do: raise(ArgumentError, "ttl_ms must be an integer in 1..2^40, got: #{inspect(ttl_ms)}")

    IO.iodata_to_binary([@version, @lease_grant, varint(id), varint(ttl_ms)])
  end

  @doc "Revokes lease `id`, deleting every key attached to it in one revision."
  @spec lease_revoke(pos_integer()) :: binary()
  def lease_revoke(id),
    do: IO.iodata_to_binary([@version, @lease_revoke, varint(pos!(id, "lease id"))])

  @doc "Drops the history of change events up to and including `revision`."
  @spec compact(pos_integer()) :: binary()
  def compact(revision),
    do: IO.iodata_to_binary([@version, @compact, varint(pos!(revision, "revision"))])

  @doc """
  The range end that selects every key starting with `prefix`.

      iex> Synod.Store.Command.prefix_end("a/")
      "a0"
      iex> Synod.Store.Command.prefix_end(<<1, 255>>)
      <<2>>
      iex> Synod.Store.Command.prefix_end(<<255>>)
      <<0>>
  """
  @spec prefix_end(binary()) :: binary()
  def prefix_end(prefix) when is_binary(prefix) do
    # The common case (the last byte is not 255) without a list: the
    # prefix with its last byte incremented.
    case byte_size(prefix) - 1 do
      -1 ->
        <<0>>

      n ->
        case prefix do
          <<head::binary-size(n), last>> when last < 255 -> <<head::binary, last + 1>>
          <<head::binary-size(n), 255>> -> prefix_end_of(head)
        end
    end
  end

  defp prefix_end_of(""), do: <<0>>
  defp prefix_end_of(prefix), do: prefix_end(prefix)

  # ---- bodies ----

  defp put_body(key, value, opts) do
    opts = opts!(opts, [:lease, :prev_kv])

    unless is_binary(value) and byte_size(value) <= @max_value,
      do: raise(ArgumentError, "a value must be a binary of at most 1 MiB")

    flags = flag(opts, :prev_kv, @prev_kv)
    lease = num!(Keyword.get(opts, :lease, 0), "lease")
    IO.iodata_to_binary([flags, bytes(key!(key)), bytes(value), varint(lease)])
  end

  defp delete_body(key, opts) do
    opts = opts!(opts, [:range_end, :prefix, :prev_kv, :first])
    key = key!(key)
    flags = flag(opts, :prev_kv, @prev_kv) ||| flag(opts, :first, @first)
    IO.iodata_to_binary([flags, bytes(key), bytes(range_end(key, opts))])
  end

  defp range_body(key, opts) do
    opts = opts!(opts, [:range_end, :prefix, :limit, :keys_only, :count_only])
    key = key!(key)
    flags = flag(opts, :keys_only, @keys_only) ||| flag(opts, :count_only, @count_only)
    limit = num!(Keyword.get(opts, :limit, 0), "limit")
    IO.iodata_to_binary([flags, bytes(key), bytes(range_end(key, opts)), varint(limit)])
  end

  defp range_end(key, opts) do
    case {Keyword.get(opts, :range_end), Keyword.get(opts, :prefix, false)} do
      {nil, false} ->
        ""

      {nil, true} ->
        prefix_end(key)

      {:end, false} ->
        <<0>>

      {e, false} when is_binary(e) and byte_size(e) <= @max_key ->
        e

      {_, true} ->
        raise ArgumentError, "give either range_end: or prefix: true, not both"

      {e, _} ->
        raise ArgumentError,
              "range_end must be :end or a binary of at most 4096 bytes, got: #{inspect(e)}"
    end
  end

  defp branch(ops), do: [varint(length(ops)), Enum.map(ops, &op/1)]

  defp op({:put, key, value}), do: [@put, put_body(key, value, [])]
  defp op({:put, key, value, opts}), do: [@put, put_body(key, value, opts)]
  defp op({:delete, key}), do: [@delete, delete_body(key, [])]
  defp op({:delete, key, opts}), do: [@delete, delete_body(key, opts)]
  defp op({:range, key}), do: [@range, range_body(key, [])]
  defp op({:range, key, opts}), do: [@range, range_body(key, opts)]

  defp op(other),
    do:
      raise(
        ArgumentError,
        "a txn op is {:put, k, v[, opts]}, {:delete, k[, opts]} or {:range, k[, opts]}, got: #{inspect(other)}"
      )

  defp compare({:exists, key}), do: [0, 0, bytes(key!(key))]
  defp compare({:absent, key}), do: [0, 3, bytes(key!(key))]

  defp compare({:value, key, op, value}) when is_binary(value) and byte_size(value) <= @max_value,
    do: [@targets.value, result!(op), bytes(key!(key)), bytes(value)]

  defp compare({:count, key, range_opts, op, n}) do
    key = key!(key)
    range_opts = opts!(range_opts, [:range_end, :prefix])

    [
      @targets.count,
      result!(op),
      bytes(key),
      bytes(range_end(key, range_opts)),
      varint(num!(n, "count"))
    ]
  end

  defp compare({target, key, op, n})
       when target in [:version, :create_revision, :mod_revision, :lease],
       do: [
         Map.fetch!(@targets, target),
         result!(op),
         bytes(key!(key)),
         varint(num!(n, target))
       ]

  defp compare(other), do: raise(ArgumentError, "not a txn compare: #{inspect(other)}")

  defp result!(op) do
    case Map.fetch(@results, op) do
      {:ok, r} ->
        r

      :error ->
        raise ArgumentError, "a compare operator is :==, :!=, :< or :>, got: #{inspect(op)}"
    end
  end

  # ---- checks and encodings ----

  defp key!(key) when is_binary(key) and byte_size(key) in 1..@max_key, do: key

  defp key!(key),
    do:
      raise(
        ArgumentError,
        "a key must be a binary of 1..4096 bytes, got: #{inspect(key, limit: 5)}"
      )

  defp num!(n, _what) when is_integer(n) and n >= 0 and n < @num_max, do: n

  defp num!(n, what),
    do: raise(ArgumentError, "#{what} must be an integer in 0..2^62-1, got: #{inspect(n)}")

  defp pos!(n, _what) when is_integer(n) and n >= 1 and n < @num_max, do: n

  defp pos!(n, what),
    do: raise(ArgumentError, "#{what} must be an integer in 1..2^62-1, got: #{inspect(n)}")

  defp list!(list, _what, max) when is_list(list) and length(list) <= max, do: list
  defp list!(_, what, max), do: raise(ArgumentError, "#{what} must be a list of at most #{max}")

  # `opts` if it is a keyword list of `known` options, else ArgumentError
  # naming the bad one.
  defp opts!([], _known), do: []

  defp opts!(opts, known) do
    case unknown(opts, known) do
      :ok ->
        opts

      :not_keyword ->
        raise ArgumentError, "options must be a keyword list"

      {:unknown, k} ->
        raise ArgumentError, "unknown option #{inspect(k)}; known: #{inspect(known)}"
    end
  end

  # One pass: :ok, :not_keyword, or the first option not in `known` (a
  # list that is not a keyword list is refused first, as Keyword.keyword?/1
  # would).
  defp unknown(opts, known), do: unknown(opts, known, :ok)

  defp unknown([], _known, found), do: found

  defp unknown([{k, _} | rest], known, found) when is_atom(k) do
    if found == :ok and not :lists.member(k, known),
      do: unknown(rest, known, {:unknown, k}),
      else: unknown(rest, known, found)
  end

  defp unknown(_not_keyword, _known, _found), do: :not_keyword

  defp flag(opts, name, bit) do
    case Keyword.get(opts, name, false) do
      true -> bit
      false -> 0
      other -> raise ArgumentError, "#{name} must be a boolean, got: #{inspect(other)}"
    end
  end

  defp bytes(bin), do: [varint(byte_size(bin)), bin]

  # Unsigned LEB128, canonical (the C decoder refuses overlong forms).
  defp varint(n) when n < 0x80, do: <<n>>
  defp varint(n), do: <<0x80 ||| (n &&& 0x7F), varint(n >>> 7)::binary>>
end
