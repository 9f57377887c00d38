defmodule Synod.Test.CoordBench do
  @moduledoc false
  # The measuring loops of bench/coord_bench.exs. They run on the peers
  # (closures must come from compiled modules); each returns the
  # microseconds of every operation, or per-client counts.

  alias Synod.{Election, Lock, Store}

  import Synod.Test.Stats, only: [timed: 2]

  @doc "`n` sequential puts."
  def puts(store, n) do
    timed(n, fn i -> {:ok, _, _} = Store.put(store, "bench/put", Integer.to_string(i)) end)
  end

  @doc "`n` sequential compare-and-swaps on one key (compare on mod_revision)."
  def cas(store, n) do
    {:ok, rev, _} = Store.put(store, "bench/cas", "0")
    last = :counters.new(1, [])
    :counters.put(last, 1, rev)

    timed(n, fn i ->
      mod = :counters.get(last, 1)

      {:ok, rev, true, _} =
        Store.txn(store, [{:mod_revision, "bench/cas", :==, mod}], [
          {:put, "bench/cas", Integer.to_string(i)}
        ])

      :counters.put(last, 1, rev)
    end)
  end

  @doc "`n` sequential lock + unlock cycles of one lock."
  def locks(store, key, n) do
    timed(n, fn _ -> {:ok, _} = Lock.lock(store, key, fn t -> t end, ttl: 5_000) end)
  end

  @doc "`n` sequential `:global.trans/3` lock + unlock cycles over `nodes`."
  def global_locks(key, nodes, n) do
    timed(n, fn _ -> :ok = :global.trans({key, self()}, fn -> :ok end, nodes) end)
  end

  @doc """
  `n` election claims: a fresh candidate starts, is elected (claim handler
  and subscriber message), and stops (releasing the seat). The time is from
  `start/1` to the `:elected` message.
  """
  def claims(store, n) do
    for i <- 1..n do
      {:ok, c} = Election.candidate(store, :bench, "c#{i}", ttl: 5_000, subscriber: self())
      t0 = System.monotonic_time(:microsecond)
      {:ok, :leader} = Election.start(c)

      receive do
        {:synod_election, :bench, _, {:elected, _}} -> :ok
      after
        10_000 -> raise "no claim"
      end

      t = System.monotonic_time(:microsecond) - t0
      :ok = Election.close(c)
      t
    end
  end

  @doc """
  Lock + unlock cycles by one client for `ms` milliseconds, started when
  `:go` arrives; sends `{:count, self(), n}` to `report_to`. `kind` is `:synod` or `:global`.
  """
  def contend(kind, store, key, nodes, ms, report_to) do
    receive do
      :go -> :ok
    end

    deadline = System.monotonic_time(:millisecond) + ms
    send(report_to, {:count, self(), contend_loop(kind, store, key, nodes, deadline, 0)})
  end

  defp contend_loop(kind, store, key, nodes, deadline, count) do
    if System.monotonic_time(:millisecond) >= deadline do
      count
    else
      case kind do
        :synod -> {:ok, _} = Lock.lock(store, key, fn t -> t end, ttl: 5_000)
        :global -> :ok = :global.trans({key, self()}, fn -> :ok end, nodes)
      end

      contend_loop(kind, store, key, nodes, deadline, count + 1)
    end
  end
end
