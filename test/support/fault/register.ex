defmodule Synod.Fault.Register do
  @moduledoc false
  # Workload: registers, one per key, read, written and compare-and-swapped
  # through Synod.Store by clients on every node; checked key by key for
  # linearizability (Synod.Fault.Linear).
  #
  # Every write puts a value no one else writes ("<process>.<n>"), so a read
  # names the write it saw. A CAS compares with the last value this client
  # read (or expects the key absent) and is a txn [value == old] -> put new.
  # An error or a timeout is :info (it may or may not have happened); only a
  # txn whose compare did not hold is a definite :fail.

  alias Synod.Fault.{Collector, Linear}
  alias Synod.Store

  @keys 3
  @call_timeout 2_000

  def setup(_cluster, _opts), do: %{keys: for(i <- 1..@keys, do: "reg/#{i}")}

  def init_client(_ctx, _process), do: %{n: 0, seen: %{}}

  def op(ctx, store, collector, process, st) do
    key = Enum.random(ctx.keys)
    st = %{st | n: st.n + 1}

    case :rand.uniform(10) do
      r when r <= 5 ->
        outcome = Collector.run(collector, process, :read, key, fn -> read(store, key) end)

        case outcome do
          {:ok, v} -> %{st | seen: Map.put(st.seen, key, v)}
          _ -> st
        end

      r when r <= 8 ->
        v = "#{inspect(process)}.#{st.n}"
        Collector.run(collector, process, :write, {key, v}, fn -> write(store, key, v) end)
        st

      _ ->
        old = Map.get(st.seen, key)
        new = "#{inspect(process)}.#{st.n}"

        Collector.run(collector, process, :cas, {key, {old, new}}, fn ->
          cas(store, key, old, new)
        end)

        st
    end
  end

  defp read(store, key) do
    case Store.get(store, key, timeout: @call_timeout) do
      {:ok, nil} -> {:ok, nil}
      {:ok, kv} -> {:ok, kv.value}
      error -> {:info, error}
    end
  end

  defp write(store, key, v) do
    case Store.put(store, key, v, timeout: @call_timeout) do
      {:ok, _rev, _} -> {:ok, nil}
      error -> {:info, error}
    end
  end

  defp cas(store, key, old, new) do
    compare = if old == nil, do: {:absent, key}, else: {:value, key, :==, old}

    case Store.txn(store, [compare], [{:put, key, new}], [], timeout: @call_timeout) do
      {:ok, _rev, true, _} -> {:ok, nil}
      {:ok, _rev, false, _} -> {:fail, nil}
      error -> {:info, error}
    end
  end

  def stop_client(_ctx, _store, _collector, _process, _st), do: :ok

  def final(_cluster, _ctx, _collector), do: :ok

  @doc "Per key: the ops on it, in the register model's terms."
  def check(ops, _events, ctx) do
    by_key =
      ops
      |> Enum.map(&model_op/1)
      |> Enum.group_by(& &1.key)

    verdicts =
      for key <- ctx.keys,
          do: {key, Linear.check(Map.get(by_key, key, []), Linear.Register)}

    counts = count(ops)

    case Enum.find(verdicts, fn {_k, v} -> v != :ok end) do
      nil -> {:ok, counts}
      {key, {:unknown, why}} -> {:unknown, counts, %{key: key, why: why}}
      {key, {:error, evidence}} -> {:error, counts, Map.put(evidence, :key, key)}
    end
  end

  defp model_op(%{f: :read, arg: key} = op), do: Map.put(op, :key, key)

  defp model_op(%{f: f, arg: {key, arg}} = op) when f in [:write, :cas],
    do: %{op | arg: arg} |> Map.put(:key, key)

  def count(ops) do
    Enum.reduce(ops, %{ok: 0, fail: 0, info: 0}, fn op, acc ->
      Map.update!(acc, op.type, &(&1 + 1))
    end)
  end
end
