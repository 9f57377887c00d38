defmodule Synod.Hub.EventQueue do
  @moduledoc false
  # Pure: the hub's event queue on one node. While it runs, an event is
  # delivered at once; while it is paused (the coordinator passes `paused`:
  # true exactly while migrations it started are in flight) an event is
  # queued, or dropped when sent with `discard`; `resume/1` delivers the
  # queued events in the order they came. Every function returns the queue
  # and the effects for the coordinator to carry out: `{:deliver, event_id,
  # data}`, to the subscribers of `event_id`, in list order. No I/O.

  @type t :: :queue.queue()
  @type effect :: {:deliver, atom(), term()}

  @doc "An empty queue."
  @spec new() :: t()
  def new, do: :queue.new()

  @doc """
  Puts an event on the queue. The answer says what became of it:
  `:event_dispatched`, `:event_queued` or `:event_discarded`.
  """
  @spec dispatch(t(), boolean(), atom(), term(), boolean()) ::
          {t(), :event_dispatched | :event_queued | :event_discarded, [effect()]}
  def dispatch(q, false = _paused, id, data, _discard),
    do: {q, :event_dispatched, [{:deliver, id, data}]}

  def dispatch(q, true, _id, _data, true), do: {q, :event_discarded, []}
  def dispatch(q, true, id, data, false), do: {:queue.in({id, data}, q), :event_queued, []}

  @doc "Delivers what was queued, in order."
  @spec resume(t()) :: {t(), [effect()]}
  def resume(q), do: {new(), for({id, data} <- :queue.to_list(q), do: {:deliver, id, data})}
end
