defmodule Synod.Hub.MigrationStrategy do
  @moduledoc """
  How a member moves children it runs to their new owner after a
  membership change: a behaviour with one pure callback, so an application
  can plug in its own (`migration: MyStrategy`).

  The callback returns the move's plan, one of:

    * `:stop_then_start` — stop the old copies, then ask the new owner to
      start them (the child does not run for a moment, never twice);
    * `:start_then_stop` — ask the new owner to start them, and stop the
      old copies once it answered (no moment without a copy; two copies
      for a moment);
    * `:start_then_handover` — as `:start_then_stop`, with the old copy's
      state handed to the new one (the child module's optional
      `handover/2`, `Synod.Handover`) before the old copy stops.

  While a move is in flight the hub's event queue is paused, whatever the
  plan (docs/hub.md, "Redistribution"). The built-in strategies:

    * `:cold` (`Synod.Hub.MigrationStrategy.Cold`) — `:stop_then_start`;
    * `:hot` (`Synod.Hub.MigrationStrategy.Hot`) — `:start_then_handover`.
  """

  @type plan :: :stop_then_start | :start_then_stop | :start_then_handover

  @doc """
  The plan for moving the children `ids` from this node to `target`. Must
  be pure (it is evaluated in the coordinator, which must not block).
  """
  @callback plan(ids :: [term()], target :: node()) :: plan()

  @doc "The module implementing a `:migration` option value."
  @spec module(atom()) :: module()
  def module(:cold), do: __MODULE__.Cold
  def module(:hot), do: __MODULE__.Hot
  def module(strategy), do: strategy

  @doc "Whether `strategy` is a built-in name or a loaded module implementing the behaviour."
  @spec valid?(term()) :: boolean()
  def valid?(strategy) when strategy in [:cold, :hot], do: true

  def valid?(strategy) when is_atom(strategy) and strategy not in [nil, true, false],
    do: Code.ensure_loaded?(strategy) and function_exported?(strategy, :plan, 2)

  def valid?(_), do: false

  @doc "The plan of `strategy` (a name or a module) for a move, checked."
  @spec plan(atom(), [term()], node()) :: plan()
  def plan(strategy, ids, target) do
    case module(strategy).plan(ids, target) do
      plan when plan in [:stop_then_start, :start_then_stop, :start_then_handover] -> plan
      # An application's strategy that answers nonsense moves the safe way.
      _ -> :stop_then_start
    end
  end
end

defmodule Synod.Hub.MigrationStrategy.Cold do
  @moduledoc "`migration: :cold`: stop the old copies, then start them on the new owner."
  @behaviour Synod.Hub.MigrationStrategy

  @impl true
  def plan(_ids, _target), do: :stop_then_start
end

defmodule Synod.Hub.MigrationStrategy.Hot do
  @moduledoc """
  `migration: :hot`: start the new copies first, hand each old copy's state
  over, then stop the old copies.
  """
  @behaviour Synod.Hub.MigrationStrategy

  @impl true
  def plan(_ids, _target), do: :start_then_handover
end
