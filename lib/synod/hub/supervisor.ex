defmodule Synod.Hub.Supervisor do
  @moduledoc false
  # One per hub per node: the node's supervisor of hub children
  # (Synod.Hub.Children), then the coordinator. :rest_for_one: a coordinator
  # that dies is restarted alone and adopts the children, which keep running
  # (docs/hub.md, "A coordinator crash keeps the children"); if the
  # children's supervisor dies, the coordinator restarts after it, and the
  # other members restart the children on their owners by the usual rules.
  #
  # It has no registered name: an OTP supervisor crashes on a call it does
  # not know, and a name would let any node send it one. Synod.stop/2 finds
  # it as the parent of the hub's children's supervisor.

  use Supervisor

  def start_link(cfg) do
    case Process.whereis(children_name(cfg.name)) do
      nil -> Supervisor.start_link(__MODULE__, cfg)
      children -> {:error, {:already_started, of(children)}}
    end
  end

  @doc false
  # The hub supervisor on this node, or nil.
  def whereis(hub) do
    case Process.whereis(children_name(hub)) do
      nil -> nil
      children -> of(children)
    end
  end

  defp of(children) do
    {:dictionary, dict} = Process.info(children, :dictionary)
    hd(Keyword.fetch!(dict, :"$ancestors"))
  end

  @doc false
  def children_name(hub), do: :"#{hub}.children"

  @impl true
  def init(cfg) do
    children = [
      {Synod.Hub.Children, cfg},
      {Synod.Hub.Coordinator, cfg}
    ]

    Supervisor.init(children, strategy: :rest_for_one, max_restarts: 3, max_seconds: 5)
  end
end
