defmodule Synod.Coord.Deadline do
  @moduledoc """
  Deadlines of the coordination primitives: `timeout:` is what the caller
  waits in total, `call_timeout:` bounds each store round trip within it.

      deadline = Synod.Coord.Deadline.new(opts.timeout)
      Synod.Store.get(store, key, Synod.Coord.Deadline.call(deadline, opts.call_timeout))

  A deadline is a `System.monotonic_time(:millisecond)` value or
  `:infinity`.
  """

  @type t :: integer() | :infinity

  @doc "The deadline `timeout` ms from now (`:infinity` stays)."
  @spec new(timeout()) :: t()
  def new(:infinity), do: :infinity
  def new(timeout) when is_integer(timeout), do: now() + timeout

  @doc "Milliseconds left until `deadline` (0 when past), for `receive ... after`."
  @spec remaining(t()) :: timeout()
  def remaining(:infinity), do: :infinity
  def remaining(deadline), do: max(0, deadline - now())

  @doc "Whether `deadline` has passed."
  @spec passed?(t()) :: boolean()
  def passed?(:infinity), do: false
  def passed?(deadline), do: now() >= deadline

  @doc """
  The store call options for one round trip before `deadline`: `timeout:`
  is `call_timeout` or what is left of the deadline if less (at least 1 ms,
  so a call made at the deadline still fails as a timeout).
  """
  @spec call(t(), pos_integer()) :: [timeout: pos_integer()]
  def call(deadline, call_timeout) do
    case remaining(deadline) do
      :infinity -> [timeout: call_timeout]
      left -> [timeout: max(1, min(left, call_timeout))]
    end
  end

  defp now, do: System.monotonic_time(:millisecond)
end
