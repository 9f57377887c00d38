defmodule Synod.Test.Stats do
  @moduledoc false
  # Percentiles and formatting shared by the benchmarks in bench/.

  @doc "The `p`th percentile (nearest rank) of a non-empty list of numbers."
  def pct(list, p) do
    sorted = Enum.sort(list)
    Enum.at(sorted, min(length(sorted) - 1, round(p / 100 * (length(sorted) - 1))))
  end

  def median(list), do: pct(list, 50)

  @doc "Microseconds as milliseconds with two decimals."
  def ms(us), do: :erlang.float_to_binary(us / 1000, decimals: 2)
end
