defmodule Synod.Coord.Deadline do
  @moduledoc """
  Deadlines of the coordination primitives: `timeout:` is what the caller
  waits in total, `call_timeout:` bounds each store round trip within it.

      budget = Synod.Coord.Deadline.budget(opts.timeout, opts.call_timeout)
      {:ok, kv} = Synod.Store.get(store, key, Synod.Coord.Deadline.opts(budget))
      # the next round trip gets what is left, at most call_timeout
      Synod.Store.put(store, key, value, Synod.Coord.Deadline.opts(budget))

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

  @typedoc "What a call may spend: its deadline and the longest round trip."
  @type budget :: %{deadline: t(), call_timeout: pos_integer()}

  @doc "The budget of a call: `timeout` in total, `call_timeout` for each round trip."
  @spec budget(timeout(), pos_integer()) :: budget()
  def budget(timeout, call_timeout), do: %{deadline: new(timeout), call_timeout: call_timeout}

  @doc """
  The store call options for the next round trip of `budget`: `timeout:` is
  its `call_timeout` or what is left of its deadline if less (at least
  1 ms, so a call made at the deadline still fails as a timeout).
  """
  @spec opts(budget()) :: [timeout: pos_integer()]
  def opts(%{deadline: deadline, call_timeout: call_timeout}) do
    case remaining(deadline) do
      :infinity -> [timeout: call_timeout]
      left -> [timeout: max(1, min(left, call_timeout))]
    end
  end

  # (the BIF itself: System.monotonic_time/1 normalizes its unit first)
  defp now, do: :erlang.monotonic_time(:millisecond)
end
