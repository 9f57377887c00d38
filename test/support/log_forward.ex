defmodule Synod.Test.LogForward do
  @moduledoc false
  # A :logger handler for a peer: every event at or above the handler's
  # level goes to a process (usually the test, on the controlling node) as
  # {:peer_log, Node, Level, Text}, so a test can wait for a line the peer
  # logged instead of reading a file. attach/3 is called on the controller.

  @doc "Attaches the handler `id` on `node`, sending events at `level` and above to `pid`."
  def attach(node, pid, level \\ :info, id \\ :synod_log_forward) do
    :ok =
      :erpc.call(node, :logger, :add_handler, [
        id,
        __MODULE__,
        %{level: level, config: %{pid: pid}}
      ])
  end

  @doc false
  def log(%{level: level} = event, %{config: %{pid: pid}}) do
    text =
      event
      |> :logger_formatter.format(%{single_line: true, template: [:msg]})
      |> IO.chardata_to_string()

    send(pid, {:peer_log, node(), level, text})
  end
end
