defmodule Synod.Fault.Queues do
  @moduledoc false
  # Workload: two queues of one store, one plain and one acknowledged
  # (Synod.Queue). Clients enqueue values no one else enqueues and dequeue
  # from both; in acknowledged mode they ack what they got. After the faults
  # are healed, both queues are drained. Checked:
  #
  #   plain:  no value is handed out twice (at most once); a value enqueued
  #           with {:ok, _} and never handed out is allowed only as often as
  #           dequeues had an unknown outcome (their txn may have taken it);
  #           values are taken in revision order (dequeue_revision order is
  #           enqueue revision order);
  #   acked:  no value is acked twice; every value enqueued with {:ok, _} is
  #           acked, unless an ack or dequeue of unknown outcome may have
  #           taken it; first deliveries are in revision order (a value whose
  #           claim expired may come back later, at its old place), checked
  #           when no dequeue had an unknown outcome (its value's first
  #           delivery would be unseen).
  #
  # What it cannot see: which value a dequeue of unknown outcome took, so a
  # loss is only counted against them, not pinned on one.

  alias Synod.Fault.{Collector, Register}
  alias Synod.Queue

  @call_timeout 2_000
  @visibility 2_000

  def setup(cluster, _opts),
    do: %{plain: {cluster.store, "fault-plain"}, acked: {cluster.store, "fault-acked"}}

  def init_client(_ctx, _process), do: 0

  def stop_client(_ctx, _store, _collector, _process, _n), do: :ok

  def op(ctx, _store, collector, process, n) do
    mode = Enum.random([:plain, :acked])
    q = Map.fetch!(ctx, mode)

    if :rand.uniform(2) == 1 do
      v = "#{inspect(process)}.#{n}"

      Collector.run(collector, process, {:enqueue, mode}, v, fn ->
        {store, name} = q

        case Queue.enqueue(store, name, v, call_timeout: @call_timeout) do
          {:ok, _key, rev} -> {:ok, rev}
          other -> {:info, other}
        end
      end)
    else
      dequeue(q, mode, collector, process)
    end

    n + 1
  end

  defp dequeue(q, mode, collector, process) do
    {store, name} = q

    opts =
      [timeout: 200, call_timeout: @call_timeout] ++
        if(mode == :acked, do: [visibility_timeout: @visibility], else: [])

    outcome =
      Collector.run(collector, process, {:dequeue, mode}, nil, fn ->
        case Queue.dequeue(store, name, opts) do
          {:ok, item} -> {:ok, item}
          {:error, :empty} -> {:fail, :empty}
          other -> {:info, other}
        end
      end)

    with {:ok, %{receipt: receipt} = item} when receipt != nil <- outcome do
      Collector.run(collector, process, {:ack, mode}, item.value, fn ->
        case Queue.ack(store, name, receipt, call_timeout: @call_timeout) do
          :ok -> {:ok, item.value}
          {:error, :lease_expired} -> {:fail, :expired}
          other -> {:info, other}
        end
      end)
    end

    outcome
  end

  # Drains both queues from the controller until each answers :empty.
  def final(_cluster, ctx, collector) do
    for mode <- [:plain, :acked], do: drain(Map.fetch!(ctx, mode), mode, collector, 0)
    :ok
  end

  defp drain(q, mode, collector, empties) do
    case dequeue(q, mode, collector, :drain) do
      {:fail, :empty} when empties >= 2 -> :ok
      {:fail, :empty} -> wait_claims_then_drain(q, mode, collector, empties)
      _ -> drain(q, mode, collector, 0)
    end
  end

  # A value whose claim has not expired yet is not handed out: wait one
  # visibility timeout before believing :empty.
  defp wait_claims_then_drain(q, mode, collector, empties) do
    Process.sleep(@visibility)
    drain(q, mode, collector, empties + 1)
  end

  def check(ops, _events, _ctx) do
    counts = Register.count(ops)
    violation = check_mode(ops, :plain) || check_mode(ops, :acked)
    if violation, do: {:error, counts, violation}, else: {:ok, counts}
  end

  defp check_mode(ops, mode) do
    enqueued = for %{f: {:enqueue, ^mode}, type: :ok} = op <- ops, do: op.arg
    taken = for %{f: {:dequeue, ^mode}, type: :ok} = op <- ops, do: op.value
    unknown_takes = Enum.count(ops, &match?(%{f: {:dequeue, ^mode}, type: :info}, &1))
    acked = for %{f: {:ack, ^mode}, type: :ok} = op <- ops, do: op.value
    unknown_acks = Enum.count(ops, &match?(%{f: {:ack, ^mode}, type: :info}, &1))

    case mode do
      :plain ->
        twice(Enum.map(taken, & &1.value), :handed_out_twice) ||
          lost(enqueued, Enum.map(taken, & &1.value), unknown_takes) ||
          order(taken, mode, :all)

      :acked ->
        twice(acked, :acked_twice) ||
          lost(enqueued, acked, unknown_takes + unknown_acks) ||
          if(unknown_takes == 0, do: order(taken, mode, :first))
    end
  end

  defp twice(values, what) do
    case values |> Enum.frequencies() |> Enum.find(fn {_v, n} -> n > 1 end) do
      nil -> nil
      {v, n} -> %{what => v, times: n}
    end
  end

  defp lost(enqueued, delivered, unknown) do
    missing = enqueued -- delivered

    if length(missing) > unknown,
      do: %{lost: Enum.take(missing, 5), count: length(missing), unknown_outcomes: unknown}
  end

  # Items sorted by the revision that handed them out must have increasing
  # enqueue revisions (:first: counting each value's first delivery only).
  defp order(items, mode, which) do
    items = Enum.sort_by(items, & &1.dequeue_revision)
    items = if which == :first, do: Enum.uniq_by(items, & &1.value), else: items

    items
    |> Enum.chunk_every(2, 1, :discard)
    |> Enum.find_value(fn [a, b] ->
      if a.revision > b.revision, do: %{out_of_order: mode, first: a, then: b}
    end)
  end
end
