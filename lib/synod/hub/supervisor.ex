defmodule Synod.Hub.Supervisor do
  @moduledoc false
  # One per hub per node: the node's supervisor of hub children
  # (Synod.Hub.Children), then the coordinator. :one_for_all, because the
  # coordinator's registry describes exactly those children: if either dies,
  # both restart, the other members see the coordinator go and come back,
  # and the children are restarted on their owners by the usual leave/join
  # rules.

  use Supervisor

  def start_link(cfg), do: Supervisor.start_link(__MODULE__, cfg, name: supervisor_name(cfg.name))

  @doc false
  def supervisor_name(hub), do: :"#{hub}.supervisor"

  @doc false
  def children_name(hub), do: :"#{hub}.children"

  @impl true
  def init(cfg) do
    children = [
      {Synod.Hub.Children, cfg},
      {Synod.Hub.Coordinator, cfg}
    ]

    Supervisor.init(children, strategy: :one_for_all, max_restarts: 3, max_seconds: 5)
  end
end
