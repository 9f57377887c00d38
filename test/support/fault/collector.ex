defmodule Synod.Fault.Collector do
  @moduledoc false
  # The history of a fault-injection run, kept on the controller.
  #
  # Every time in a history is the controller's monotonic clock, read by
  # this process: VMs on one machine do not share a monotonic base, so a
  # client never sends its own clock. A client *calls* invoke/4 before it
  # starts an operation (the stamp is taken before the client goes on, so it
  # is no later than the real invocation, and the invocation is on record
  # even if the client's VM is killed a moment later) and *casts*
  # complete/3 after (the stamp is no earlier than the real completion).
  # An operation without a completion is indeterminate: it may or may not
  # have taken effect, at any time after its invocation.
  #
  # An op is %{id, process, f, arg, invoke, complete, type, value}: type is
  # :ok, :fail (a definite failure, e.g. a compare-and-swap whose compare
  # did not hold) or :info (unknown outcome: a timeout, an error, a crash,
  # or no completion at all, then complete is nil). Events (note/3) are
  # instants inside an operation, e.g. a lock holder entering its section.

  use GenServer

  def start(name), do: GenServer.start(__MODULE__, nil, name: name)

  @doc "Records an invocation; returns its id. Called from any node."
  def invoke(collector, process, f, arg),
    do: GenServer.call(collector, {:invoke, process, f, arg}, 30_000)

  @doc "Records the completion of `id`: {type, value} with type :ok, :fail or :info."
  def complete(collector, id, {type, value}) when type in [:ok, :fail, :info],
    do: GenServer.cast(collector, {:complete, id, type, value})

  @doc "Records an instant event inside an operation, stamped before the caller goes on."
  def note(collector, process, event),
    do: GenServer.call(collector, {:note, process, event}, 30_000)

  @doc "Records a nemesis step (for the history file)."
  def nemesis(collector, step), do: GenServer.call(collector, {:note, :nemesis, step}, 30_000)

  @doc "The history so far: {ops sorted by invocation, events sorted by time}."
  def history(collector), do: GenServer.call(collector, :history, 60_000)

  @doc "Runs `fun` as operation `f` of `process`: invocation, outcome, completion."
  def run(collector, process, f, arg, fun) do
    id = invoke(collector, process, f, arg)

    outcome =
      try do
        fun.()
      catch
        kind, reason -> {:info, {kind, reason}}
      end

    complete(collector, id, outcome)
    outcome
  end

  @impl true
  def init(nil),
    do:
      {:ok, %{next: 0, ops: %{}, events: [], base: System.monotonic_time(:microsecond), last: 0}}

  @impl true
  def handle_call({:invoke, process, f, arg}, _from, s) do
    {t, s} = stamp(s)

    op = %{
      id: s.next,
      process: process,
      f: f,
      arg: arg,
      invoke: t,
      complete: nil,
      type: :info,
      value: nil
    }

    {:reply, s.next, %{s | next: s.next + 1, ops: Map.put(s.ops, s.next, op)}}
  end

  def handle_call({:note, process, event}, _from, s) do
    {t, s} = stamp(s)
    {:reply, :ok, %{s | events: [{t, process, event} | s.events]}}
  end

  def handle_call(:history, _from, s) do
    ops = s.ops |> Map.values() |> Enum.sort_by(& &1.invoke)
    {:reply, {ops, Enum.reverse(s.events)}, s}
  end

  @impl true
  def handle_cast({:complete, id, type, value}, s) do
    {t, s} = stamp(s)
    ops = Map.update!(s.ops, id, fn op -> %{op | complete: t, type: type, value: value} end)

    {:noreply, %{s | ops: ops}}
  end

  # Microseconds since the collector started, strictly increasing: no two
  # stamps are equal, so their order is the order this process saw them in.
  defp stamp(s) do
    t = max(System.monotonic_time(:microsecond) - s.base, s.last + 1)
    {t, %{s | last: t}}
  end
end
