defmodule Synod.Handle do
  @moduledoc """
  A request in flight, returned by `Synod.start_children/3` and
  `Synod.stop_children/3` with `await: false`. Pass it to `Synod.await/1`
  from the process that made the request (the answers are messages to it).

  A handle holds no resources on any node: if its process exits without
  awaiting, nothing is left behind but a few messages that die with it.
  """

  @enforce_keys [:hub, :ref, :kind, :results, :monitors, :deadline]
  defstruct [
    :hub,
    :ref,
    :kind,
    :results,
    :monitors,
    :deadline,
    ids: [],
    on_failure: :continue,
    owner: nil,
    # the member whose coordinator passes the answers on (this node on a member)
    relay: nil
  ]

  @type t :: %__MODULE__{}
end
