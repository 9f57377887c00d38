defmodule Synod.Application do
  @moduledoc false
  # Node-wide processes: Synod.Telemetry's handler table, the table behind Synod.leader/1 and friends, the
  # leader cache of Synod.Raft.Router, and the supervisor that
  # Synod.Raft.start_member/1 starts group members under, and the balancer
  # that spreads group leaders over the nodes (Synod.Raft.Balancer.Shell);
  # the node's shared Raft WAL (Synod.Raft.Wal) is started on demand under
  # its own supervisor, by the first member that runs on it.

  use Application

  @impl true
  def start(_type, _args) do
    children = [
      Synod.Telemetry,
      Synod.Raft.Info,
      Synod.Raft.Router,
      {DynamicSupervisor, name: Synod.Raft.WalSupervisor, strategy: :one_for_one},
      {DynamicSupervisor, name: Synod.Raft.Supervisor, strategy: :one_for_one},
      Synod.Raft.Balancer.Shell
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: Synod.Supervisor)
  end
end
