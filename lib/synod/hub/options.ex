defmodule Synod.Hub.Options do
  @moduledoc false
  # Pure: validates hub options and per-call options eagerly, raising
  # ArgumentError that names the bad option. Never starts or sends anything.

  @hub_defaults [
    replication_factor: 1,
    replication_model: :active_active,
    migration: :cold,
    handover_timeout: 5_000,
    partition_strategy: :divergence,
    ring: [],
    max_restarts: 1_000,
    max_seconds: 5
  ]

  @doc false
  @spec hub!(keyword()) :: map()
  def hub!(opts) do
    keyword!(opts, "hub options")

    name =
      case Keyword.fetch(opts, :name) do
        {:ok, name} when is_atom(name) and name not in [nil, true, false] -> name
        {:ok, other} -> bad(:name, "must be an atom, got: #{inspect(other)}")
        :error -> raise ArgumentError, "option :name is required"
      end

    opts = Keyword.merge(@hub_defaults, Keyword.delete(opts, :name))

    Enum.reduce(opts, %{name: name}, fn {key, value}, acc ->
      Map.put(acc, key, hub_option!(key, value))
    end)
  end

  defp hub_option!(:replication_factor, n) when is_integer(n) and n in 1..64, do: n

  defp hub_option!(:replication_factor, n),
    do: bad(:replication_factor, "must be an integer in 1..64, got: #{inspect(n)}")

  defp hub_option!(:replication_model, m) do
    if Synod.Hub.ReplicationModel.valid?(m),
      do: m,
      else:
        bad(
          :replication_model,
          "must be :active_active, :active_passive or a module implementing Synod.Hub.ReplicationModel, got: #{inspect(m)}"
        )
  end

  defp hub_option!(:migration, m) do
    if Synod.Hub.MigrationStrategy.valid?(m),
      do: m,
      else:
        bad(
          :migration,
          "must be :cold, :hot or a module implementing Synod.Hub.MigrationStrategy, got: #{inspect(m)}"
        )
  end

  defp hub_option!(:handover_timeout, t) when is_integer(t) and t > 0, do: t

  defp hub_option!(:handover_timeout, t),
    do: bad(:handover_timeout, "must be a positive integer, got: #{inspect(t)}")

  defp hub_option!(:partition_strategy, s) do
    if Synod.Hub.PartitionStrategy.valid?(s),
      do: s,
      else:
        bad(
          :partition_strategy,
          "must be :divergence, :majority or a module implementing Synod.Hub.PartitionStrategy, got: #{inspect(s)}"
        )
  end

  defp hub_option!(:ring, ring) when is_list(ring) do
    # Build a throwaway ring now so a bad :vnodes or :seed fails at start.
    try do
      _ = Synod.Ring.new([:probe], ring)
      Keyword.take(ring, [:vnodes, :seed])
    rescue
      e in ArgumentError -> bad(:ring, e.message)
    end
  end

  defp hub_option!(:ring, r), do: bad(:ring, "must be a keyword list, got: #{inspect(r)}")
  defp hub_option!(:max_restarts, n) when is_integer(n) and n >= 0, do: n

  defp hub_option!(:max_restarts, n),
    do: bad(:max_restarts, "must be a non-negative integer, got: #{inspect(n)}")

  defp hub_option!(:max_seconds, n) when is_integer(n) and n > 0, do: n

  defp hub_option!(:max_seconds, n),
    do: bad(:max_seconds, "must be a positive integer, got: #{inspect(n)}")

  defp hub_option!(key, _), do: raise(ArgumentError, "unknown option #{inspect(key)}")

  @start_defaults [
    await: true,
    timeout: 5_000,
    on_failure: :continue,
    check_existing: true,
    metadata: nil
  ]
  @stop_defaults [await: true, timeout: 5_000]

  @doc false
  @spec start!(keyword()) :: map()
  def start!(opts), do: call_options!(opts, @start_defaults)

  @doc false
  @spec stop!(keyword()) :: map()
  def stop!(opts), do: call_options!(opts, @stop_defaults)

  defp call_options!(opts, defaults) do
    keyword!(opts, "options")

    for {key, _} <- opts, not Keyword.has_key?(defaults, key) do
      raise ArgumentError, "unknown option #{inspect(key)}"
    end

    defaults |> Keyword.merge(opts) |> Map.new(fn {k, v} -> {k, call_option!(k, v)} end)
  end

  defp call_option!(:await, b) when is_boolean(b), do: b
  defp call_option!(:await, b), do: bad(:await, "must be a boolean, got: #{inspect(b)}")
  defp call_option!(:timeout, t) when (is_integer(t) and t >= 0) or t == :infinity, do: t

  defp call_option!(:timeout, t),
    do: bad(:timeout, "must be a non-negative integer or :infinity, got: #{inspect(t)}")

  defp call_option!(:on_failure, f) when f in [:continue, :rollback], do: f

  defp call_option!(:on_failure, f),
    do: bad(:on_failure, "must be :continue or :rollback, got: #{inspect(f)}")

  defp call_option!(:check_existing, b) when is_boolean(b), do: b

  defp call_option!(:check_existing, b),
    do: bad(:check_existing, "must be a boolean, got: #{inspect(b)}")

  defp call_option!(:metadata, m) when is_map(m) or is_nil(m), do: m
  defp call_option!(:metadata, m), do: bad(:metadata, "must be a map, got: #{inspect(m)}")

  @doc false
  @spec members!(term()) :: :global | :local | :external | [node()]
  def members!(m) when m in [:global, :local, :external], do: m

  def members!(list) when is_list(list) do
    if Enum.all?(list, &is_atom/1),
      do: list,
      else: bad(:members, "must be a list of nodes, got: #{inspect(list)}")
  end

  def members!(m),
    do: bad(:members, "must be :global, :local, :external or a list of nodes, got: #{inspect(m)}")

  @doc """
  Options of `Synod.Dispatcher.dispatch_event/4`, as a keyword list or as
  the map of the seed's API (`%{discard_event: true, members: ...}`):
  `:discard` (or `:discard_event`, the same), `:members`, `:timeout`.
  """
  @spec event!(keyword() | map()) :: %{discard: boolean(), members: term(), timeout: timeout()}
  def event!(opts) when is_map(opts), do: event!(Map.to_list(opts))

  def event!(opts) do
    keyword!(opts, "options")

    Enum.reduce(opts, %{discard: false, members: :local, timeout: 5_000}, fn
      {key, d}, acc when key in [:discard, :discard_event] and is_boolean(d) ->
        %{acc | discard: d}

      {key, d}, _acc when key in [:discard, :discard_event] ->
        bad(key, "must be a boolean, got: #{inspect(d)}")

      {:members, m}, acc ->
        %{acc | members: members!(m)}

      {:timeout, t}, acc when t == :infinity or (is_integer(t) and t >= 0) ->
        %{acc | timeout: t}

      {:timeout, t}, _acc ->
        bad(:timeout, "must be a non-negative integer or :infinity, got: #{inspect(t)}")

      {key, _}, _acc ->
        raise ArgumentError, "unknown option #{inspect(key)}"
    end)
  end

  @doc false
  def keyword!(opts, what) do
    unless is_list(opts) and Keyword.keyword?(opts),
      do: raise(ArgumentError, "#{what} must be a keyword list, got: #{inspect(opts)}")
  end

  defp bad(key, message), do: raise(ArgumentError, "option #{inspect(key)} #{message}")
end
