defmodule Synod.ProperRulesTest do
  # PropEr properties of two pure parts: the task status machine
  # (Synod.Tasks.Rules) under any sequence of requests and lease expiries,
  # and the ring's placement under any sequence of membership changes.
  use ExUnit.Case, async: true

  alias Synod.Ring
  alias Synod.Tasks.{Rules, Task}

  import :proper_types, only: [list: 1, oneof: 1, elements: 1, integer: 2, non_empty: 1]

  defp quickcheck(prop, n),
    do: :proper.quickcheck(prop, [{:numtests, n}, :quiet])

  defp check(prop, n) do
    assert quickcheck(prop, n) == true, "counterexample: #{inspect(:proper.counterexample())}"
  end

  # ---- the task status machine ----

  @workers [:w1, :w2, :w3]

  defp request do
    worker = elements([nil | @workers])

    oneof([
      {:reserve, elements(@workers)},
      {:extend, worker},
      {:snooze, worker},
      {:fail, worker},
      {:terminate, worker},
      {:revoke, :current},
      {:revoke, :stale},
      :lease_expires
    ])
  end

  # A worker "pid" stands in for a real one: Rules only compares them.
  defp pid(nil), do: nil
  defp pid(w), do: :c.pid(0, 100 + Enum.find_index(@workers, &(&1 == w)), 0)

  defp to_rules({:reserve, w}, _t, lease), do: {:reserve, pid(w), lease, 1_000}
  defp to_rules({:extend, w}, _t, _lease), do: {:extend, pid(w)}
  defp to_rules({:snooze, w}, _t, lease), do: {:snooze, pid(w), lease, 1_000}
  defp to_rules({:fail, w}, _t, _lease), do: {:fail, pid(w), :boom}
  defp to_rules({:terminate, w}, _t, _lease), do: {:terminate, pid(w)}
  defp to_rules({:revoke, :current}, t, _lease), do: {:revoke, t.record_ver}
  defp to_rules({:revoke, :stale}, t, _lease), do: {:revoke, t.record_ver + 1}

  # Applies a plan as Synod.Tasks does: the new record one version up, its
  # lease key alive iff the plan put it (or kept a live one).
  defp apply_plan(t, live, new, effects) do
    live =
      case effects.lease_key do
        {:put, _} -> true
        :delete -> false
        :keep -> live
      end

    {%{new | record_ver: t.record_ver + 1}, live}
  end

  defp step(:lease_expires, {t, _live}, _lease), do: {:ok, {t, false}}

  defp step(req, {t, live}, lease) do
    from = Rules.effective(t, live)

    case Rules.plan({t, live}, to_rules(req, t, lease), 0) do
      {:ok, new, effects} ->
        {t2, live2} = apply_plan(t, live, new, effects)
        to = Rules.effective(t2, live2)
        violation = invariant_broken(from, to, req, live2)
        if violation, do: {:violation, violation, req}, else: {:ok, {t2, live2}}

      {:error, reason} ->
        if from.status in [:failed, :terminated] and reason != :already_done,
          do: {:violation, {:final_task_refused_as, reason}, req},
          else: {:ok, {t, live}}
    end
  end

  defp invariant_broken(from, to, req, live) do
    cond do
      from.status in [:failed, :terminated] ->
        {:final_task_changed, from.status, to.status}

      # an extend keeps a running task running; every change is in the table
      from.status != to.status and not Rules.allowed?(from.status, to.status) ->
        {:outside_the_table, from.status, to.status}

      # held: running with a live lease key, by exactly the reserving worker
      to.status == :running and not (live and to.owner != nil) ->
        {:running_without_a_live_holder, to}

      to.owner != nil and to.status != :running ->
        {:owned_but_not_running, to}

      match?({:reserve, _}, req) and to.owner != pid(elem(req, 1)) ->
        {:reserved_for_someone_else, to}

      # only the holder (or nobody, for an unheld task) may move a task on
      elem(req, 0) in [:extend, :snooze, :fail, :terminate] and from.owner != pid(elem(req, 1)) ->
        {:moved_by_a_non_holder, req, from}

      match?({:revoke, :stale}, req) ->
        {:stale_revoke_applied, from}

      true ->
        nil
    end
  end

  test "no task request leaves the table, and a task has at most one live holder" do
    prop =
      :proper.forall(list(request()), fn requests ->
        start = {%Task{id: "t", topic: "x", seq: 1}, false}

        result =
          requests
          |> Enum.with_index(1)
          |> Enum.reduce_while(start, fn {req, lease}, state ->
            case step(req, state, lease) do
              {:ok, state} -> {:cont, state}
              violation -> {:halt, violation}
            end
          end)

        not match?({:violation, _, _}, result)
      end)

    check(prop, 2_000)
  end

  # ---- the ring ----

  @pool for i <- 1..12, do: :"n#{i}@127.0.0.1"
  @keys for i <- 1..200, do: "key-#{i}"

  defp change, do: oneof([{:add, elements(@pool), integer(1, 4)}, {:remove, elements(@pool)}])

  # Applies a change if it makes sense (adding a present member or removing
  # the last one is skipped).
  defp apply_change({:add, m, w}, members) do
    if List.keymember?(members, m, 0), do: members, else: members ++ [{m, w}]
  end

  defp apply_change({:remove, m}, members) do
    if length(members) > 1, do: List.keydelete(members, m, 0), else: members
  end

  defp ring_of(members), do: Ring.new(members, vnodes: 64)

  defp moved(before, after_, keys) do
    for k <- keys, Ring.lookup(before, k) != Ring.lookup(after_, k), do: k
  end

  test "placement: distinct owners, the same ring however it was built, minimal moves" do
    prop =
      :proper.forall({non_empty(list(change())), integer(1, 4)}, fn {changes, n} ->
        {_, ok?} =
          Enum.reduce_while(changes, {[{hd(@pool), 1}], true}, fn change, {members, true} ->
            next = apply_change(change, members)
            before = ring_of(members)
            incremental = incremental(before, members, next)
            fresh = ring_of(next)
            names = Enum.map(next, &elem(&1, 0))

            ok? =
              Enum.all?(@keys, fn k ->
                owners = Ring.owners(fresh, k, n)

                owners == Ring.owners(incremental, k, n) and
                  length(owners) == min(n, length(names)) and
                  length(Enum.uniq(owners)) == length(owners) and
                  Enum.all?(owners, &(&1 in names)) and
                  Ring.lookup(fresh, k) == hd(owners)
              end) and minimal_moves?(change, members, next, before, fresh)

            if ok?, do: {:cont, {next, true}}, else: {:halt, {next, false}}
          end)

        ok?
      end)

    check(prop, 150)
  end

  defp incremental(ring, members, next) do
    case {members -- next, next -- members} do
      {[], [{m, w}]} -> Ring.add_member(ring, m, w)
      {[{m, _}], []} -> Ring.remove_member(ring, m)
      {[], []} -> ring
    end
  end

  # A key changes owner only to a joining member, or away from a leaving one.
  defp minimal_moves?(_change, same, same, _before, _after), do: true

  defp minimal_moves?({:add, m, _}, _members, _next, before, after_),
    do: Enum.all?(moved(before, after_, @keys), &(Ring.lookup(after_, &1) == m))

  defp minimal_moves?({:remove, m}, _members, _next, before, after_),
    do: Enum.all?(moved(before, after_, @keys), &(Ring.lookup(before, &1) == m))
end
