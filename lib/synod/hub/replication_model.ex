defmodule Synod.Hub.ReplicationModel do
  @moduledoc """
  How the copies of a child split into active and passive ones: a behaviour
  with one pure callback, so an application can plug in its own
  (`replication_model: MyModel`; every member must use the same, it is part
  of the configuration members compare when they meet).

  A copy is told its mode (`{:synod_mode, hub, mode}`) when it starts with
  a replication factor above 1, and again when a membership change changes
  it. The built-in models:

    * `:active_active` (`Synod.Hub.ReplicationModel.ActiveActive`) — every
      copy is active;
    * `:active_passive` (`Synod.Hub.ReplicationModel.ActivePassive`) — the
      first owner's copy is active, the others passive.
  """

  @doc """
  The mode of the copy on `node`, one of the child's `owners` (its
  preference list, first owner first). Must be pure: every member and every
  caller evaluates it on the same ring and must agree.
  """
  @callback mode(owners :: [node()], node :: node()) :: :active | :passive

  @doc "The module implementing a `:replication_model` option value."
  @spec module(atom()) :: module()
  def module(:active_active), do: __MODULE__.ActiveActive
  def module(:active_passive), do: __MODULE__.ActivePassive
  def module(model), do: model

  @doc "Whether `model` is a built-in name or a loaded module implementing the behaviour."
  @spec valid?(term()) :: boolean()
  def valid?(model) when model in [:active_active, :active_passive], do: true

  def valid?(model) when is_atom(model) and model not in [nil, true, false],
    do: Code.ensure_loaded?(model) and function_exported?(model, :mode, 2)

  def valid?(_), do: false
end

defmodule Synod.Hub.ReplicationModel.ActiveActive do
  @moduledoc "`replication_model: :active_active`: every copy is active."
  @behaviour Synod.Hub.ReplicationModel

  @impl true
  def mode(_owners, _node), do: :active
end

defmodule Synod.Hub.ReplicationModel.ActivePassive do
  @moduledoc """
  `replication_model: :active_passive`: the copy on the first owner is
  active, the others are passive.
  """
  @behaviour Synod.Hub.ReplicationModel

  @impl true
  def mode([node | _], node), do: :active
  def mode(_owners, _node), do: :passive
end
