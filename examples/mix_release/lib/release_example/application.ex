defmodule ReleaseExample.Application do
  @moduledoc false
  # Every node runs the same tree: Synod's hub, this node's member of the
  # store (when it is one of the configured nodes), and a task that connects
  # to the other nodes.

  use Application

  @impl true
  def start(_type, _args) do
    nodes = Application.fetch_env!(:release_example, :nodes)
    data_dir = Application.fetch_env!(:release_example, :data_dir)

    store =
      if node() in nodes,
        do: [{Synod.Store, name: ReleaseExample.store(), voters: nodes, data_dir: data_dir}],
        else: []

    children =
      [{Synod, name: ReleaseExample.hub()}] ++
        store ++ [Supervisor.child_spec({Task, fn -> connect(nodes) end}, restart: :transient)]

    Supervisor.start_link(children, strategy: :one_for_one, name: ReleaseExample.Supervisor)
  end

  # Nodes boot one after the other: keep trying until every one answered.
  defp connect(nodes) do
    case Enum.reject(nodes, &(&1 == node() or Node.connect(&1))) do
      [] ->
        :ok

      _missing ->
        Process.sleep(200)
        connect(nodes)
    end
  end
end
