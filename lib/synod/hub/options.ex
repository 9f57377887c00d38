defmodule Synod.Hub.Options do
  @moduledoc false
  # Pure: validates hub options and per-call options eagerly with the one
  # validator (Synod.Coord.Options: one message shape, naming the bad
  # option). Never starts or sends anything.

  alias Synod.Coord.Options, as: Schema
  alias Synod.Hub.{MigrationStrategy, PartitionStrategy, ReplicationModel}

  @hub_schema [
    name: [type: :atom, required: true],
    replication_factor: [type: {:integer, 1, 64}, default: 1],
    replication_model: [
      type:
        {:custom, &ReplicationModel.valid?/1,
         ":active_active, :active_passive or a module implementing Synod.Hub.ReplicationModel"},
      default: :active_active
    ],
    migration: [
      type:
        {:custom, &MigrationStrategy.valid?/1,
         ":cold, :hot or a module implementing Synod.Hub.MigrationStrategy"},
      default: :cold
    ],
    handover_timeout: [type: :pos_integer, default: 5_000],
    partition_strategy: [
      type:
        {:custom, &PartitionStrategy.valid?/1,
         ":divergence, :majority or a module implementing Synod.Hub.PartitionStrategy"},
      default: :divergence
    ],
    ring: [
      type: {:custom, &__MODULE__.ring?/1, "ring options (a keyword list: :vnodes, :seed)"},
      default: []
    ],
    max_restarts: [type: :non_neg_integer, default: 1_000],
    max_seconds: [type: :pos_integer, default: 5],
    read_concurrency: [type: :boolean, default: false]
  ]

  @doc false
  @spec hub!(keyword()) :: map()
  def hub!(opts) do
    cfg = Schema.validate!(opts, @hub_schema)
    %{cfg | ring: Keyword.take(cfg.ring, [:vnodes, :seed])}
  end

  # A throwaway ring now, so that a bad :vnodes or :seed fails at start.
  @doc false
  @spec ring?(term()) :: boolean()
  def ring?(ring) do
    Keyword.keyword?(ring) and
      try do
        _ = Synod.Ring.new([:probe], ring)
        true
      rescue
        ArgumentError -> false
      end
  end

  @timeout [type: :timeout, default: 5_000]
  @stop_schema [await: [type: :boolean, default: true], timeout: @timeout]
  @start_schema @stop_schema ++
                  [
                    on_failure: [type: {:in, [:continue, :rollback]}, default: :continue],
                    check_existing: [type: :boolean, default: true],
                    metadata: [type: {:nil_or, {:custom, &is_map/1, "a map"}}, default: nil]
                  ]

  @doc false
  @spec start!(keyword()) :: map()
  def start!(opts), do: Schema.validate!(opts, @start_schema)

  @doc false
  @spec stop!(keyword()) :: map()
  def stop!(opts), do: Schema.validate!(opts, @stop_schema)

  @members {:custom, &__MODULE__.members?/1, ":global, :local, :external or a list of nodes"}

  @doc false
  @spec members?(term()) :: boolean()
  def members?(m) when m in [:global, :local, :external], do: true
  def members?(list), do: is_list(list) and Enum.all?(list, &is_atom/1)

  @event_schema [
    discard: [type: :boolean],
    discard_event: [type: :boolean],
    members: [type: @members, default: :local],
    timeout: @timeout
  ]

  @doc "Options of `Synod.Dispatcher.propagate_event/3`: `:members` (default `:global`)."
  @spec propagate!(keyword()) :: %{members: term()}
  def propagate!(opts), do: Schema.validate!(opts, members: [type: @members, default: :global])

  @doc """
  Options of `Synod.Dispatcher.dispatch_event/4`, as a keyword list or as
  the map of the seed's API (`%{discard_event: true, members: ...}`):
  `:discard` (or `:discard_event`, the same), `:members`, `:timeout`.
  """
  @spec event!(keyword() | map()) :: %{discard: boolean(), members: term(), timeout: timeout()}
  def event!(opts) do
    o = Schema.validate!(opts, @event_schema)

    %{
      discard: Map.get(o, :discard, false) or Map.get(o, :discard_event, false),
      members: o.members,
      timeout: o.timeout
    }
  end
end
