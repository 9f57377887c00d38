defmodule Synod.Fault.TaskStore do
  @moduledoc false
  # Workload: the task store (Synod.Tasks). Clients create tasks in one
  # topic, and, as workers, reserve one (lease 1 s), hold it a little, extend
  # its lease once and terminate it. Checked, task by task:
  #
  #   * at most one worker holds it with a live lease: once another worker's
  #     reservation of the task has completed, the earlier holder is never
  #     told {:ok, _} again (extend or terminate) for it;
  #   * final is final: a task terminated with {:ok, _} is never reserved
  #     after that;
  #   * every answer is a status the operation may lead to (reserve and
  #     extend: :running; terminate: :terminated); the transition table itself
  #     is PropEr's (test/elixir/proper_rules_test.exs).
  #
  # What it cannot see: when a lease really expired on the leader (a worker
  # paused past its lease is reserved by the next one, which is fine).

  alias Synod.Fault.{Collector, Register}
  alias Synod.Tasks

  @topic "fault-tasks"
  @call_timeout 2_000
  # definite refusals; any other error (a timeout) leaves the outcome unknown
  @refusals [:already_done, :wrong_owner, :lease_expired, :no_task_found, :record_changed]

  def setup(_cluster, _opts), do: %{}

  def init_client(_ctx, _process), do: 0

  def stop_client(_ctx, _store, _collector, _process, _n), do: :ok

  def op(_ctx, store, collector, process, n) do
    if :rand.uniform(3) == 1 do
      id = "t#{:erlang.phash2(process)}-#{n}"

      Collector.run(collector, process, :create, id, fn ->
        case Tasks.create_task(store, [id: id, topic: @topic, data: n],
               call_timeout: @call_timeout
             ) do
          {:ok, _} -> {:ok, id}
          other -> {:info, other}
        end
      end)
    else
      work(store, collector, process)
    end

    n + 1
  end

  defp work(store, collector, process) do
    me = self()

    reserved =
      Collector.run(collector, process, :reserve, nil, fn ->
        case Tasks.reserve_task(store, @topic, me, ttl: 1_000, call_timeout: @call_timeout) do
          {:ok, nil} -> {:fail, :none}
          {:ok, t} -> {:ok, {t.id, t.status}}
          other -> {:info, other}
        end
      end)

    with {:ok, {id, _}} <- reserved do
      Process.sleep(:rand.uniform(300))

      change(collector, process, :extend, id, fn ->
        Tasks.extend_lease(store, id, me, call_timeout: @call_timeout)
      end)

      Process.sleep(:rand.uniform(300))

      change(collector, process, :terminate, id, fn ->
        Tasks.terminate(store, id, me, call_timeout: @call_timeout)
      end)
    end
  end

  defp change(collector, process, f, id, fun) do
    Collector.run(collector, process, f, id, fn ->
      case fun.() do
        {:ok, t} -> {:ok, {t.id, t.status}}
        {:error, reason} when reason in @refusals -> {:fail, reason}
        other -> {:info, other}
      end
    end)
  end

  def final(_cluster, _ctx, _collector), do: :ok

  def check(ops, _events, _ctx) do
    counts = Register.count(ops)
    held = for %{f: f, type: :ok} = op <- ops, f in [:reserve, :extend, :terminate], do: op

    by_task = Enum.group_by(held, fn op -> elem(op.value, 0) end)

    violation =
      Enum.find_value(held, &wrong_status/1) ||
        Enum.find_value(by_task, fn {id, ops} ->
          two_holders(id, ops) || reserved_after_done(id, ops)
        end)

    if violation, do: {:error, counts, violation}, else: {:ok, counts}
  end

  defp wrong_status(%{f: f, value: {id, status}} = op) do
    expected = if f == :terminate, do: :terminated, else: :running
    if status != expected, do: %{task: id, op: op, expected: expected}
  end

  defp two_holders(id, ops) do
    reserves = for %{f: :reserve} = r <- ops, do: r

    for a <- reserves,
        b <- reserves,
        a.process != b.process,
        a.complete < b.complete,
        told <- ops,
        told.process == a.process,
        told.f in [:extend, :terminate],
        told.invoke > b.complete,
        not reserved_again?(reserves, a.process, b.complete, told.invoke) do
      %{
        task: id,
        earlier_holder_told_ok_after_a_later_reserve: %{earlier: a, later: b, told: told}
      }
    end
    |> List.first()
  end

  defp reserved_again?(reserves, process, from, to),
    do: Enum.any?(reserves, &(&1.process == process and &1.invoke > from and &1.complete < to))

  defp reserved_after_done(id, ops) do
    for %{f: :terminate} = t <- ops, %{f: :reserve} = r <- ops, r.invoke > t.complete do
      %{task: id, reserved_after_terminated: %{terminated: t, reserved: r}}
    end
    |> List.first()
  end
end
