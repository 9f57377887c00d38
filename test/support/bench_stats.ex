defmodule Synod.Test.Stats do
  @moduledoc false
  # Percentiles, formatting and timing loops shared by the benchmarks in bench/.

  @doc "The `p`th percentile (nearest rank) of a non-empty list of numbers."
  def pct(list, p) do
    sorted = Enum.sort(list)
    Enum.at(sorted, min(length(sorted) - 1, round(p / 100 * (length(sorted) - 1))))
  end

  def median(list), do: pct(list, 50)

  @doc "Microseconds as milliseconds with two decimals."
  def ms(us), do: :erlang.float_to_binary(us / 1000, decimals: 2)

  @doc "The microseconds of each of `n` sequential runs of `fun.(i)`."
  def timed(n, fun) do
    for i <- 1..n do
      t0 = System.monotonic_time(:microsecond)
      fun.(i)
      System.monotonic_time(:microsecond) - t0
    end
  end

  @doc """
  Operations per second of `clients` concurrent processes, each running
  `client.(k)` (k in 1..clients), which does `per` operations.
  """
  def rate(clients, per, client) do
    t0 = System.monotonic_time(:microsecond)
    1..clients |> Enum.map(&Task.async(fn -> client.(&1) end)) |> Task.await_many(600_000)
    round(clients * per / ((System.monotonic_time(:microsecond) - t0) / 1_000_000))
  end

  @doc """
  Polls `fun` every `step` ms until it returns true and answers the
  monotonic time (native units) at which it did; raises after `deadline`
  (monotonic ms).
  """
  def wait(fun, deadline, step \\ 2) do
    cond do
      fun.() -> System.monotonic_time()
      System.monotonic_time(:millisecond) > deadline -> raise "timed out"
      true -> Process.sleep(step) && wait(fun, deadline, step)
    end
  end

  @doc "Native time to copy `src` to `dst` and fsync the copy (then removed): a disk baseline."
  def copy_fsync(src, dst) do
    t0 = System.monotonic_time()
    {:ok, _} = File.copy(src, dst)
    {:ok, f} = :file.open(dst, [:raw, :read, :write, :binary])
    :ok = :file.sync(f)
    :ok = :file.close(f)
    t = System.monotonic_time() - t0
    File.rm!(dst)
    t
  end
end
