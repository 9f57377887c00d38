defmodule Synod.Fault.Locks do
  @moduledoc false
  # Workload: every client takes one lock (Synod.Lock.lock/4) over and over
  # and, inside, notes {:enter, token} and {:exit, token} with the collector
  # around a short sleep. Checked:
  #
  #   * tokens: a section that ended before another entered has the smaller
  #     token, and no token is granted twice;
  #   * overlaps: two sections overlap in time only while a fault was on
  #     (with no fault no holder can lose its lease), and the earlier holder
  #     of an overlap (the smaller token) was never told {:ok, _}.
  #
  # A section without its exit (the holder's VM was killed or paused) is open
  # to the end. What it cannot see: when the earlier holder's lease really
  # expired on the leader (renewals are not in the history), so an overlap
  # that starts under a fault but sooner than the TTL after it passes.

  alias Synod.Fault.{Collector, Register}
  alias Synod.Lock

  @ttl 1_000
  @call_timeout 2_000

  def setup(_cluster, _opts), do: %{key: "fault/lock", ttl: @ttl}

  def init_client(_ctx, _process), do: nil

  def stop_client(_ctx, _store, _collector, _process, _st), do: :ok

  def op(ctx, store, collector, process, st) do
    Collector.run(collector, process, :lock, ctx.key, fn ->
      section = fn token ->
        Collector.note(collector, process, {:enter, token})
        Process.sleep(:rand.uniform(200))
        Collector.note(collector, process, {:exit, token})
        :held
      end

      case Lock.lock(store, ctx.key, section,
             ttl: ctx.ttl,
             timeout: 3_000,
             call_timeout: @call_timeout
           ) do
        {:ok, :held} -> {:ok, :held}
        {:error, {:lock_lost, _}} -> {:fail, :lock_lost}
        other -> {:info, other}
      end
    end)

    st
  end

  def final(_cluster, _ctx, _collector), do: :ok

  def check(ops, events, _ctx) do
    counts = Register.count(ops) |> Map.put(:sections, 0)
    sections = sections(ops, events)
    counts = %{counts | sections: length(sections)}
    faults = fault_windows(events)

    violation = duplicate_token(sections) || token_order(sections) || overlap(sections, faults)

    if violation, do: {:error, counts, violation}, else: {:ok, counts}
  end

  # {process, token, enter, exit | :infinity, told}: told is the outcome
  # type of the lock call the section ran in.
  defp sections(ops, events) do
    notes = for {t, p, {kind, token}} <- events, kind in [:enter, :exit], do: {t, p, kind, token}
    exits = Map.new(for {t, p, :exit, token} <- notes, do: {{p, token}, t})

    for {t, p, :enter, token} <- notes do
      op =
        Enum.find(ops, fn op ->
          op.process == p and op.invoke <= t and (op.complete == nil or t <= op.complete)
        end)

      %{
        process: p,
        token: token,
        enter: t,
        exit: Map.get(exits, {p, token}, :infinity),
        told: op && op.type
      }
    end
  end

  defp duplicate_token(sections) do
    sections
    |> Enum.group_by(& &1.token)
    |> Enum.find_value(fn {token, s} ->
      if length(s) > 1, do: %{token_granted_twice: token, sections: s}
    end)
  end

  defp token_order(sections) do
    for a <- sections, b <- sections, a.exit != :infinity, a.exit < b.enter, a.token > b.token do
      %{later_grant_smaller_token: %{earlier: a, later: b}}
    end
    |> List.first()
  end

  # :infinity (an open section) sorts after every integer time
  defp overlap(sections, faults) do
    overlaps =
      for a <- sections,
          b <- sections,
          a.token < b.token,
          b.enter < a.exit,
          a.enter < b.exit,
          why = overlap_violation(a, b, faults),
          do: %{overlap: why, earlier: a, later: b}

    List.first(overlaps)
  end

  defp overlap_violation(a, b, faults) do
    cond do
      a.told == :ok -> :earlier_holder_told_ok
      not Enum.any?(faults, fn {from, _to} -> from <= b.enter end) -> :overlap_without_a_fault
      true -> nil
    end
  end

  @doc false
  # Windows of time during which a fault was on: from an injection to the
  # matching heal (or the end).
  def fault_windows(events) do
    steps = for {t, :nemesis, step} <- events, do: {t, step}

    steps
    |> Enum.filter(fn {_t, step} -> injection?(step) end)
    |> Enum.map(fn {t, _} ->
      heal = Enum.find(steps, fn {t2, s} -> t2 > t and not injection?(s) end)
      {t, if(heal, do: elem(heal, 0), else: :infinity)}
    end)
  end

  defp injection?({kind, _}) when kind in [:kill, :pause, :disk_full], do: true
  defp injection?({:partition, _, _}), do: true
  defp injection?(_), do: false
end
