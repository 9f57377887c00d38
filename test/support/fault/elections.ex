defmodule Synod.Fault.Elections do
  @moduledoc false
  # Workload: every client runs a candidate (Synod.Election) in one
  # election and keeps asking it how long it still leads
  # (leader_until/1, the deadline leader?/1 compares with). Checked: never
  # two candidates leading at the same instant.
  #
  # A poll is a collector op: the candidate's node read "leads for r more
  # ms" at some instant in [invoke, complete] of the controller's clock, so
  # the candidate certainly led during [complete, invoke + r], or until it
  # resigned (close/1 at the end of the run). Two different candidates whose
  # certain intervals meet are two leaders at once.
  #
  # What it cannot see: clock skew between the nodes' monotonic clocks (one
  # machine here, so their rates agree), and leadership between polls.

  alias Synod.Fault.{Collector, Register}
  alias Synod.Election

  @ttl 1_000

  def setup(_cluster, _opts), do: %{election: "fault-election"}

  def init_client(_ctx, _process), do: nil

  def stop_client(_ctx, _store, _collector, _process, nil), do: :ok

  # Closing resigns: the candidate's leadership ends by the time close/1
  # returns, so its intervals are cut there (see check/3).
  def stop_client(_ctx, _store, collector, process, c),
    do: Collector.run(collector, process, :close, nil, fn -> {:ok, Election.close(c)} end)

  def op(ctx, store, _collector, process, nil) do
    case Election.candidate(store, ctx.election, inspect(process), ttl: @ttl, start: true) do
      {:ok, c} ->
        c

      _ ->
        Process.sleep(100)
        nil
    end
  end

  def op(_ctx, _store, collector, process, c) do
    Collector.run(collector, process, :leads_for, nil, fn ->
      case Election.leader_until(c) do
        nil -> {:ok, 0}
        until -> {:ok, max(until - System.monotonic_time(:millisecond), 0)}
      end
    end)

    Process.sleep(10)
    c
  end

  def final(_cluster, _ctx, _collector), do: :ok

  def check(ops, _events, _ctx) do
    closed = Map.new(for %{f: :close} = op <- ops, do: {op.process, op.complete || op.invoke})

    terms =
      for %{f: :leads_for, type: :ok, value: ms} = op <- ops,
          ms > 0,
          from = op.complete,
          to = min(op.invoke + ms * 1_000, Map.get(closed, op.process, :infinity)),
          from < to,
          do: {op.process, from, to}

    counts = Register.count(ops) |> Map.put(:leading_polls, length(terms))

    # sorted by start, two leaders at once show up as neighbours in a sweep
    clash =
      terms
      |> Enum.sort_by(&elem(&1, 1))
      |> Enum.reduce_while(nil, fn {p, from, to} = t, held ->
        case held do
          {q, _, until} = h when q != p and from < until -> {:halt, {:two_leaders, h, t}}
          {_, _, until} when until >= to -> {:cont, held}
          _ -> {:cont, t}
        end
      end)

    case clash do
      {:two_leaders, a, b} -> {:error, counts, %{two_leaders: [a, b]}}
      _ -> {:ok, counts}
    end
  end
end
