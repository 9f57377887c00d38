defmodule Synod.StopResult do
  @moduledoc """
  The outcome of `Synod.stop_children/3` (and `Synod.stop_child/3`).

    * `:stopped` — `{child_id, node, pid}` for every copy that was stopped;
    * `:errors` — `{child_id, node, reason}`: `:not_found` (once per child)
      when no member ran it, `:timeout` or `{:nodedown, node}` when a node
      that may run it did not answer.
  """

  defstruct stopped: [], errors: []

  @type t :: %__MODULE__{stopped: [{term(), node(), pid()}], errors: [{term(), node(), term()}]}
end
