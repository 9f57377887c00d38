defmodule Synod.Hub.PartitionStrategy do
  @moduledoc """
  How a hub member decides that its side of the cluster is partitioned: a
  behaviour with one pure callback, so an application can plug in its own
  (`partition_strategy: MyStrategy`; every member must use the same).

  A member that decides it is partitioned stops its children (their rows
  are kept, as suspended), refuses starts and stops with
  `{:error, :partitioned}`, and emits `:partitioned`; when it decides it is
  no longer, it emits `:healed` and takes the children back (see
  "Partitions" and "Stops" in `docs/hub.md`). The built-in strategies:

    * `:divergence` (`Synod.Hub.PartitionStrategy.Divergence`) — never
      partitioned: each side runs every child until the heal;
    * `:majority` (`Synod.Hub.PartitionStrategy.Majority`) — partitioned
      while the side sees fewer than a majority of the members it has known.
  """

  @doc """
  Whether a member that sees the members `seen` (itself included, sorted)
  and has known the members `known` (every member it has seen since it
  started, less those that stopped gracefully) is partitioned. Must be
  pure: every member evaluates it on its own view.
  """
  @callback partitioned?(seen :: [node()], known :: [node()]) :: boolean()

  @doc "The module implementing a `:partition_strategy` option value."
  @spec module(atom()) :: module()
  def module(:divergence), do: __MODULE__.Divergence
  def module(:majority), do: __MODULE__.Majority
  def module(strategy), do: strategy

  @doc "Whether `strategy` is a built-in name or a loaded module implementing the behaviour."
  @spec valid?(term()) :: boolean()
  def valid?(strategy) when strategy in [:divergence, :majority], do: true

  def valid?(strategy) when is_atom(strategy),
    do: Code.ensure_loaded?(strategy) and function_exported?(strategy, :partitioned?, 2)

  def valid?(_), do: false
end

defmodule Synod.Hub.PartitionStrategy.Divergence do
  @moduledoc "`partition_strategy: :divergence`: a side is never partitioned."
  @behaviour Synod.Hub.PartitionStrategy

  @impl true
  def partitioned?(_seen, _known), do: false
end

defmodule Synod.Hub.PartitionStrategy.Majority do
  @moduledoc """
  `partition_strategy: :majority`: a side is partitioned while it sees
  fewer than `div(known, 2) + 1` of the members it has known.
  """
  @behaviour Synod.Hub.PartitionStrategy

  @impl true
  def partitioned?(seen, known), do: Synod.Hub.Placement.minority?(length(seen), length(known))
end
