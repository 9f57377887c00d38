defmodule Synod.Test.Store do
  @moduledoc false
  # Helpers for the store tests and benches on real peers. Everything that
  # runs on a peer is defined here, in a compiled module.

  alias Synod.Store
  alias Synod.Test.Stats

  @doc """
  Writes `events` change events with transactions of `per_txn` puts each
  (keys "fill/<n>"), from `clients` concurrent clients on this node.
  Returns the store's revision after the last one.
  """
  def fill(store, events, per_txn \\ 100, clients \\ 8) do
    txns = div(events + per_txn - 1, per_txn)

    0..(txns - 1)
    |> Enum.chunk_every(div(txns + clients - 1, clients))
    |> Enum.map(fn chunk ->
      Task.async(fn ->
        for t <- chunk do
          ops = for i <- 1..per_txn, do: {:put, "fill/#{t * per_txn + i}", "v"}
          {:ok, _, true, _} = Store.txn(store, [], ops, [], timeout: 30_000)
        end
      end)
    end)
    |> Task.await_many(300_000)

    {:ok, rev} = Store.revision(store)
    rev
  end

  @doc """
  Starts a process on this node that watches `key` with `opts` and, once it
  has `count` events, sends `{:watched, tag, [{revision, key}]}` to `report`.
  Returns once the watch is registered.
  """
  def collect(store, key, opts, count, report, tag) do
    start_owner(fn ->
      {:ok, ref} = Store.watch(store, key, opts)
      {:ok, fn -> report_when(ref, count, [], report, tag) end}
    end)
  end

  defp report_when(_ref, count, acc, report, tag) when length(acc) >= count,
    do: send(report, {:watched, tag, Enum.reverse(acc)})

  defp report_when(ref, count, acc, report, tag) do
    receive do
      {:synod_watch, ^ref, events} when is_list(events) ->
        acc = Enum.reduce(events, acc, fn {_type, rev, kv, _}, acc -> [{rev, kv.key} | acc] end)
        report_when(ref, count, acc, report, tag)
    end
  end

  @doc """
  Starts `count` processes on this node, each watching `key` from the next
  revision; each sends `{:saw, i, value}` to `report` when it sees a put of
  `value`. Returns once every watch is registered.
  """
  def watchers(store, key, count, report) do
    for i <- 1..count do
      start_owner(fn ->
        {:ok, ref} = Store.watch(store, key)
        {:ok, fn -> forward_puts(ref, i, report) end}
      end)
    end

    :ok
  end

  defp forward_puts(ref, i, report) do
    receive do
      {:synod_watch, ^ref, events} when is_list(events) ->
        for {:put, _rev, kv, _} <- events, do: send(report, {:saw, i, kv.value})
        forward_puts(ref, i, report)
    end
  end

  @doc """
  Starts a process on this node that waits for the lock `key` and sends
  `{:granted, tag, token}` to `report` once it holds it (then releases it).
  """
  def lock_waiter(store, key, report, tag) do
    spawn(fn ->
      {:ok, token} =
        Synod.Lock.lock(store, key, fn token -> token end, ttl: 30_000, timeout: 60_000)

      send(report, {:granted, tag, token})
    end)

    :ok
  end

  @doc """
  Starts a process on this node that takes the lock `key`, sends
  `{:holding, tag}` to `report` and holds the lock until it gets `:release`.
  Returns its pid.
  """
  def lock_holder(store, key, report, tag) do
    spawn(fn ->
      Synod.Lock.lock(
        store,
        key,
        fn _token ->
          send(report, {:holding, tag})

          receive do
            :release -> :ok
          end
        end,
        ttl: 30_000
      )
    end)
  end

  @doc """
  Puts "<prefix><i>" => "<i>" for i in 1..n, one after another from this
  node, sending `{:put_done, i}` to `report` after each; returns every
  result.
  """
  def put_loop(store, prefix, n, report) do
    for i <- 1..n do
      result = Store.put(store, "#{prefix}#{i}", "#{i}", timeout: 30_000)
      send(report, {:put_done, i})
      result
    end
  end

  @doc "Puts per second with `clients` concurrent clients on this node, `per` puts each."
  def put_rate(store, clients, per) do
    Stats.rate(clients, per, fn c ->
      for i <- 1..per,
          do: {:ok, _, _} = Store.put(store, "bench/rate/#{c}", "#{i}", timeout: 30_000)
    end)
  end

  @doc "Microseconds of each of `n` sequential linearizable gets."
  def gets(store, n), do: Stats.timed(n, fn _ -> {:ok, _} = Store.get(store, "bench/put") end)

  @doc "Compare-and-swaps per second with `clients` clients on this node, each on its own key."
  def cas_rate(store, clients, per) do
    Stats.rate(clients, per, fn c ->
      key = "bench/cas/#{c}"
      {:ok, rev, _} = Store.put(store, key, "0")

      Enum.reduce(1..per, rev, fn i, mod ->
        {:ok, rev, true, _} =
          Store.txn(store, [{:mod_revision, key, :==, mod}], [{:put, key, "#{i}"}], [],
            timeout: 30_000
          )

        rev
      end)
    end)
  end

  # Runs `setup` in a new process that then runs the function it returns;
  # returns after `setup`, so the caller knows the watch exists.
  defp start_owner(setup) do
    caller = self()

    pid =
      spawn(fn ->
        {:ok, run} = setup.()
        send(caller, {:owner_ready, self()})
        run.()
      end)

    receive do
      {:owner_ready, ^pid} -> pid
    after
      30_000 -> raise "watch owner not ready"
    end
  end
end
