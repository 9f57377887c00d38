defmodule Synod.TasksRulesTest do
  # The task status machine, pure: every (from, to) pair of the table, the
  # owner and record-version checks, and what a plan does to the keys.
  use ExUnit.Case, async: true

  alias Synod.Tasks.{Rules, Task}

  @allowed %{
    starting: [:running, :failed, :terminated],
    running: [:failed, :snoozed, :terminated, :starting],
    snoozed: [:starting, :failed, :terminated],
    failed: [],
    terminated: []
  }

  defp owner, do: :c.pid(0, 100, 0)
  defp other, do: :c.pid(0, 101, 0)

  # A stored record whose effective status is `status`, with its lease key
  # alive when it has one.
  defp view(:running), do: {task(:running, owner(), 7), true}
  defp view(:snoozed), do: {task(:snoozed, nil, 8), true}
  defp view(status), do: {task(status, nil, 0), false}

  defp task(status, owner, lease),
    do: %Task{
      id: "t",
      topic: "x",
      seq: 1,
      status: status,
      owner: owner,
      lease_id: lease,
      lease_ms: 1_000,
      record_ver: 42
    }

  defp caller(:running), do: owner()
  defp caller(_), do: nil

  # The request that asks for `to`, made by the task's rightful caller.
  defp request(from, :running), do: {:reserve, caller(from) || other(), 9, 1_000}
  defp request(_from, :starting), do: {:revoke, 42}
  defp request(from, :snoozed), do: {:snooze, caller(from), 9, 500}
  defp request(from, :failed), do: {:fail, caller(from), :boom}
  defp request(from, :terminated), do: {:terminate, caller(from)}

  test "every pair of the table: allowed ones plan, the others are refused with the reason" do
    statuses = Rules.statuses()
    assert length(statuses) == 5

    for from <- statuses, to <- statuses do
      expected = to in @allowed[from]
      assert Rules.allowed?(from, to) == expected, "#{from} -> #{to}"

      case Rules.plan(view(from), request(from, to), 1_000) do
        {:ok, new, _effects} ->
          assert expected, "#{from} -> #{to} was planned"
          assert new.status == to
          assert new.updated_at == 1_000

        {:error, reason} ->
          refute expected, "#{from} -> #{to} refused: #{inspect(reason)}"

          if from in [:failed, :terminated],
            do: assert(reason == :already_done),
            else: assert(reason == {:invalid_transition, from, to})
      end
    end
  end

  test "an expired lease or an ended snooze reads as :starting, unowned" do
    for status <- [:running, :snoozed] do
      {t, true} = view(status)
      assert %Task{status: :starting, owner: nil, lease_id: 0} = Rules.effective(t, false)
      assert Rules.effective(t, true) == t
    end
  end

  test "owner checks: the holder, an expired holder, anyone else" do
    {t, true} = view(:running)
    assert {:ok, _, %{lease_key: :keep}} = Rules.plan({t, true}, {:extend, owner()}, 0)
    assert {:error, :wrong_owner} = Rules.plan({t, true}, {:extend, other()}, 0)
    assert {:error, :wrong_owner} = Rules.plan({t, true}, {:terminate, nil}, 0)
    # Its lease expired: the old holder is told so, others are not the owner,
    # and nobody-holds-it (nil) may end it.
    assert {:error, :lease_expired} = Rules.plan({t, false}, {:extend, owner()}, 0)
    assert {:error, :lease_expired} = Rules.plan({t, false}, {:terminate, owner()}, 0)
    assert {:error, :wrong_owner} = Rules.plan({t, false}, {:fail, other(), :x}, 0)
    assert {:ok, %Task{status: :terminated}, _} = Rules.plan({t, false}, {:terminate, nil}, 0)
    # Re-reserved by another: the old holder is the wrong owner.
    assert {:error, :wrong_owner} =
             Rules.plan({%{t | owner: other()}, true}, {:extend, owner()}, 0)

    # Final tasks are done, whoever asks.
    assert {:error, :already_done} = Rules.plan(view(:terminated), {:extend, owner()}, 0)
  end

  test "revoke_lease needs the record version that was read" do
    {t, true} = view(:running)
    assert {:error, :record_changed} = Rules.plan({t, true}, {:revoke, 41}, 0)

    assert {:ok, %Task{status: :starting, owner: nil}, %{lease_key: :delete, drop_lease: 7}} =
             Rules.plan({t, true}, {:revoke, 42}, 0)

    assert {:error, {:invalid_transition, :starting, :starting}} =
             Rules.plan({t, false}, {:revoke, 42}, 0)
  end

  test "what each plan does to the lease key and the active index" do
    {t, true} = view(:running)
    other = other()

    assert {:ok, %Task{status: :running, owner: ^other, lease_id: 9, lease_deadline: 1_100},
            %{lease_key: {:put, 9}, active: :keep, drop_lease: nil}} =
             Rules.plan(view(:starting), {:reserve, other(), 9, 100}, 1_000)

    assert {:ok, %Task{status: :snoozed, owner: nil, lease_id: 9, snooze_until: 500},
            %{lease_key: {:put, 9}, active: :keep, drop_lease: 7}} =
             Rules.plan({t, true}, {:snooze, owner(), 9, 500}, 0)

    assert {:ok, %Task{status: :failed, error: :boom, lease_id: 0},
            %{lease_key: :delete, active: :delete, drop_lease: 7}} =
             Rules.plan({t, true}, {:fail, owner(), :boom}, 0)

    assert {:ok, %Task{status: :terminated},
            %{lease_key: :delete, active: :delete, drop_lease: nil}} =
             Rules.plan(view(:starting), {:terminate, nil}, 0)
  end

  test "the transitions are data (Synod.Tasks.transitions/0), the table the rules follow" do
    assert Synod.Tasks.transitions() == @allowed
  end

  test "Synod.Tasks.Worker: an :id option per child, options checked eagerly" do
    opts = [store: :jobs, topic: "mail", fun: &Function.identity/1]
    assert %{id: Synod.Tasks.Worker} = Synod.Tasks.Worker.child_spec(opts)
    assert %{id: :mail_2} = Synod.Tasks.Worker.child_spec([id: :mail_2] ++ opts)

    assert_raise ArgumentError, ~r/option ttl/, fn ->
      Synod.Tasks.Worker.child_spec([ttl: 0] ++ opts)
    end

    assert_raise ArgumentError, ~r/missing option fun/, fn ->
      Synod.Tasks.Worker.child_spec(store: :jobs, topic: "mail")
    end

    assert_raise ArgumentError, ~r/unknown option :lease_ms/, fn ->
      Synod.Tasks.Worker.child_spec([lease_ms: 5] ++ opts)
    end

    assert {:error, {:unknown_store, :jobs}} = Synod.Tasks.Worker.start_link(opts)
  end

  test "every Synod.Tasks function answers an unknown store at once, by name" do
    u = {:error, {:unknown_store, :no_jobs}}
    assert u == Synod.Tasks.create_task(:no_jobs, %{topic: "t"})
    assert u == Synod.Tasks.create_tasks(:no_jobs, [%{topic: "t"}])
    assert u == Synod.Tasks.reserve_task(:no_jobs, "t", self(), timeout: 10_000)
    assert u == Synod.Tasks.task(:no_jobs, "id")
    assert u == Synod.Tasks.tasks(:no_jobs, "group")
    assert u == Synod.Tasks.list_tasks(:no_jobs)
    assert u == Synod.Tasks.list_leased_tasks(:no_jobs, "t")
    assert u == Synod.Tasks.extend_lease(:no_jobs, "id", self())
    assert u == Synod.Tasks.terminate(:no_jobs, "id", self())
    assert u == Synod.Tasks.revoke_lease(:no_jobs, "id", 1)
  end
end
