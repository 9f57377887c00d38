# Ring lookups from Elixir versus the usual pure-Elixir ring, in one run.
#
#   MIX_ENV=test mix run bench/ring_bench.exs
#
# Synod: Synod.Ring.lookup/2 (NIF, SipHash-2-4, 16 members x 2048 vnodes).
# Baseline: a :gb_trees ring of :erlang.phash2 points, 128 per member, looked
# up with iterator_from/next and wrapping to the smallest point.
# Every figure is the median of 15 rounds of 200,000 lookups of distinct
# 16-byte keys; the ratio is baseline / Synod.

defmodule RingBench do
  @members for i <- 1..16, do: :"node#{i}@127.0.0.1"
  @rounds 15
  @n 200_000

  def run do
    keys = for _ <- 1..@n, do: :crypto.strong_rand_bytes(16)
    ring = Synod.Ring.new(@members)
    tree = gb_ring(@members, 128)

    rounds =
      for _ <- 1..@rounds do
        {synod_ns(ring, keys), gb_ns(tree, keys), empty_ns(keys)}
      end

    synod = median(Enum.map(rounds, &elem(&1, 0)))
    gb = median(Enum.map(rounds, &elem(&1, 1)))
    loop = median(Enum.map(rounds, &elem(&1, 2)))

    IO.puts("ring lookup from Elixir, 16 members, 16-byte keys, medians of #{@rounds} x #{@n}")
    IO.puts("  Synod.Ring.lookup/2        #{fmt(synod)} ns/call  (target <= 40 ns)")
    IO.puts("  :gb_trees + phash2 ring    #{fmt(gb)} ns/call")
    IO.puts("  ratio baseline/Synod       #{Float.round(gb / synod, 2)}x  (target >= 3x)")
    IO.puts("  loop overhead alone        #{fmt(loop)} ns/iteration (included in both)")

    bulk_ns =
      median(for _ <- 1..5, do: time_ns(fn -> Synod.Ring.lookup_many(ring, keys) end) / @n)

    IO.puts("  lookup_many, per key       #{fmt(bulk_ns)} ns")

    IO.puts(
      "  longest scheduler block during lookup_many of 200k keys: #{longest_block(ring, keys)}"
    )
  end

  defp gb_ring(members, per_member) do
    for m <- members, i <- 1..per_member, reduce: :gb_trees.empty() do
      tree -> :gb_trees.enter(:erlang.phash2({m, i}, 4_294_967_296), m, tree)
    end
  end

  defp gb_lookup(tree, key) do
    h = :erlang.phash2(key, 4_294_967_296)

    case :gb_trees.next(:gb_trees.iterator_from(h, tree)) do
      {_point, member, _} -> member
      :none -> elem(:gb_trees.smallest(tree), 1)
    end
  end

  defp synod_ns(ring, keys), do: time_ns(fn -> synod_loop(ring, keys) end) / @n
  defp gb_ns(tree, keys), do: time_ns(fn -> gb_loop(tree, keys) end) / @n
  defp empty_ns(keys), do: time_ns(fn -> empty_loop(keys) end) / @n

  defp synod_loop(_ring, []), do: :ok

  defp synod_loop(ring, [k | rest]),
    do:
      (
        Synod.Ring.lookup(ring, k)
        synod_loop(ring, rest)
      )

  defp gb_loop(_tree, []), do: :ok

  defp gb_loop(tree, [k | rest]),
    do:
      (
        gb_lookup(tree, k)
        gb_loop(tree, rest)
      )

  defp empty_loop([]), do: :ok
  defp empty_loop([_ | rest]), do: empty_loop(rest)

  defp time_ns(fun) do
    t0 = System.monotonic_time(:nanosecond)
    fun.()
    System.monotonic_time(:nanosecond) - t0
  end

  # Asks the VM to report any run of more than 1 ms without yielding.
  defp longest_block(ring, keys) do
    :erlang.system_monitor(self(), [{:long_schedule, 1}])
    Synod.Ring.lookup_many(ring, keys)
    :erlang.system_monitor(:undefined)

    receive do
      {:monitor, _pid, :long_schedule, info} -> "#{info[:timeout]} ms (over the 1 ms threshold)"
    after
      100 -> "none over 1 ms"
    end
  end

  defp median(values), do: values |> Enum.sort() |> Enum.at(div(length(values), 2))
  defp fmt(ns), do: ns |> Float.round(1) |> to_string() |> String.pad_leading(7)
end

RingBench.run()
