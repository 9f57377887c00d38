defmodule Synod.Hub.Starter do
  @moduledoc false
  # Runs inside the node's DynamicSupervisor as the start function of every
  # hub child: starts the real child and tells the coordinator its pid, on the
  # first start and on every restart, so the registry never keeps a stale pid.
  # Must never block: it only sends one message.

  @doc false
  def start_link(hub, id, {m, f, a}) do
    case apply(m, f, a) do
      {:ok, pid} = ok when is_pid(pid) ->
        send(hub, {:synod_child_up, id, pid})
        ok

      {:ok, pid, _info} = ok when is_pid(pid) ->
        send(hub, {:synod_child_up, id, pid})
        ok

      other ->
        other
    end
  end
end
