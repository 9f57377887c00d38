defmodule Synod.Values do
  @moduledoc """
  Values in a `Synod.Store`: read a key or the direct children of a prefix,
  and change a key atomically with a function (compare-and-swap on the key's
  `mod_revision`).

      {:ok, 1} = Synod.Values.transform(:cfg, "counter", fn nil -> 1; n -> n + 1 end)
      {:ok, %{"counter" => 1}} = Synod.Values.get_values(:cfg, "counter")
      {:ok, 2} = Synod.Values.try_transform(:cfg, "counter", &(&1 + 1))

  ## How values are stored

  The store holds binaries. With the default `codec: :term`, every value is
  stored as `:erlang.term_to_binary/1` of the Elixir term — binaries too, so
  `"on"` is stored as `<<131, 109, 0, 0, 0, 2, "on">>` — and read back with
  `:erlang.binary_to_term(bytes, [:safe])` (no new atoms are created from
  stored data). Bytes that are not an external term (written by
  `Synod.Store.put/4` or a native client) read as `{:error, {:not_a_term,
  key}}`. With `codec: :binary` values are stored and returned as they are
  (they must be binaries of at most 1 MiB): use it to share keys with
  programs that do not speak the external term format.

  ## Transforms

  `transform/4` reads the key, computes `fun.(current)` (`current` is `nil`
  when the key is absent) and writes the result in a transaction that
  succeeds only if the key's `mod_revision` is still the one read (0 for an
  absent key: a key created meanwhile conflicts too). On a conflict the
  transaction's failure branch returns the key as it is now, and `fun` runs
  again on that value: `fun` may run several times and must have no other
  effect. Revisions never repeat, so a key changed and changed back (same
  value, same version after a delete and re-create) still conflicts: no ABA.

  `try_transform/4` runs `fun` once: `{:ok, new}` or `{:conflict, current}`.

  A store call that times out (`{:error, :timeout}`) has an unknown outcome
  (the write may still commit); it is returned as such, never retried with
  a recomputed value, so an acknowledged transform is applied exactly once
  and an unacknowledged one at most once.
  """

  alias Synod.Coord.{Deadline, Options, Stores}
  alias Synod.Store

  @type codec :: :term | :binary
  @type option :: {:codec, codec()} | {:timeout, timeout()} | {:call_timeout, pos_integer()}

  @schema [
    codec: [type: {:in, [:term, :binary]}, default: :term],
    timeout: [type: :timeout, default: 5_000],
    call_timeout: [type: :pos_integer, default: 5_000]
  ]

  @doc """
  The value under `key`, or the values of the direct children of a prefix.

  A `key` that ends with `"/"` is a prefix: the result holds every existing
  key `key <> name` where `name` contains no `"/"` (grandchildren such as
  `key <> "a/b"` are left out). Any other key gives a map with that key, or
  an empty map. Returns `{:ok, %{key => value}}` (linearizable).

  Options: `codec:` (`:term` default, or `:binary`, see the module doc),
  `timeout:` in total (ms, default 5000), `call_timeout:` the store round
  trip (ms, default 5000).
  """
  @spec get_values(Store.store(), binary(), [option()]) ::
          {:ok, %{binary() => term()}} | {:error, term()}
  def get_values(store, key, opts \\ []) do
    {opts, ctx} = args!(store, key, opts)

    with :ok <- Stores.check(store),
         {:ok, kvs} <- read(store, key, ctx) do
      decode_all(kvs, opts.codec)
    end
  end

  @doc """
  Sets `key` to `fun.(current)` atomically (`current` is `nil` for an absent
  key), retrying on conflict. Returns `{:ok, new}`, or `{:error, reason}`
  (`:timeout`: outcome unknown). `fun` may run more than once.

  Options: `codec:`; `timeout:` ms for the whole transform, every retry
  included (default 5000); `call_timeout:` each store round trip (ms,
  default 5000).
  """
  @spec transform(Store.store(), binary(), (term() -> term()), [option()]) ::
          {:ok, term()} | {:error, term()}
  def transform(store, key, fun, opts \\ []) do
    Options.check!(fun, :fun, {:fun, 1})
    {opts, ctx} = args!(store, key, opts)

    with :ok <- Stores.check(store),
         {:ok, kv} <- Store.get(store, key, call(ctx)) do
      transform_loop(store, key, fun, opts.codec, kv, ctx)
    end
  end

  @doc """
  Sets `key` to `fun.(current)` if nobody changed it between the read and
  the write; `fun` runs exactly once. Returns `{:ok, new}`,
  `{:conflict, current}` (the value that won, `nil` if the key was deleted)
  or `{:error, reason}`.

  Options as `transform/4`.
  """
  @spec try_transform(Store.store(), binary(), (term() -> term()), [option()]) ::
          {:ok, term()} | {:conflict, term()} | {:error, term()}
  def try_transform(store, key, fun, opts \\ []) do
    Options.check!(fun, :fun, {:fun, 1})
    {opts, ctx} = args!(store, key, opts)
    codec = opts.codec

    with :ok <- Stores.check(store),
         {:ok, kv} <- Store.get(store, key, call(ctx)),
         {:ok, current} <- decode_kv(kv, key, codec) do
      case swap(store, key, kv, encode!(fun.(current), codec), ctx) do
        {:ok, new_bytes} ->
          decode(new_bytes, key, codec)

        {:conflict, now} ->
          with {:ok, value} <- decode_kv(now, key, codec), do: {:conflict, value}

        error ->
          error
      end
    end
  end

  defp transform_loop(store, key, fun, codec, kv, ctx) do
    with {:ok, current} <- decode_kv(kv, key, codec) do
      case swap(store, key, kv, encode!(fun.(current), codec), ctx) do
        {:ok, new_bytes} -> decode(new_bytes, key, codec)
        {:conflict, now} -> transform_loop(store, key, fun, codec, now, ctx)
        error -> error
      end
    end
  end

  # The compare-and-swap: the write happens only if the key's mod_revision is
  # still the one read (0 = absent); otherwise the key as it is now comes back
  # from the failure branch, read in the same revision.
  defp swap(store, key, kv, new_bytes, ctx) do
    mod = if kv, do: kv.mod_revision, else: 0

    case Store.txn(
           store,
           [{:mod_revision, key, :==, mod}],
           [{:put, key, new_bytes}],
           [
             {:range, key}
           ],
           call(ctx)
         ) do
      {:ok, _rev, true, _} -> {:ok, new_bytes}
      {:ok, _rev, false, [{:range, kvs, _, _}]} -> {:conflict, List.first(kvs)}
      {:error, _} = error -> error
    end
  end

  defp read(store, key, ctx) do
    if String.ends_with?(key, "/") do
      with {:ok, kvs, _count, _more} <- Store.range(store, key, [prefix: true] ++ call(ctx)) do
        size = byte_size(key)

        {:ok,
         Enum.reject(kvs, fn %{key: k} ->
           String.contains?(binary_part(k, size, byte_size(k) - size), "/")
         end)}
      end
    else
      with {:ok, kv} <- Store.get(store, key, call(ctx)), do: {:ok, List.wrap(kv)}
    end
  end

  defp decode_all(kvs, codec) do
    Enum.reduce_while(kvs, {:ok, %{}}, fn kv, {:ok, acc} ->
      case decode(kv.value, kv.key, codec) do
        {:ok, value} -> {:cont, {:ok, Map.put(acc, kv.key, value)}}
        error -> {:halt, error}
      end
    end)
  end

  defp decode_kv(nil, _key, _codec), do: {:ok, nil}
  defp decode_kv(kv, key, codec), do: decode(kv.value, key, codec)

  defp decode(bytes, _key, :binary), do: {:ok, bytes}

  defp decode(bytes, key, :term) do
    {:ok, :erlang.binary_to_term(bytes, [:safe])}
  rescue
    ArgumentError -> {:error, {:not_a_term, key}}
  end

  defp encode!(value, :term), do: :erlang.term_to_binary(value)
  defp encode!(value, :binary) when is_binary(value), do: value

  defp encode!(value, :binary),
    do:
      raise(
        ArgumentError,
        "with codec: :binary the function must return a binary, got: #{inspect(value, limit: 5)}"
      )

  defp args!(store, key, opts) do
    Options.check!(store, :store, :atom)
    Options.check!(key, :key, {:binary, 4096})
    opts = Options.validate!(opts, @schema)
    {opts, Deadline.budget(opts.timeout, opts.call_timeout)}
  end

  defp call(budget), do: Deadline.opts(budget)
end
