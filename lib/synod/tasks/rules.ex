defmodule Synod.Tasks.Rules do
  @moduledoc """
  The status machine of `Synod.Tasks`, pure: no store, no clock (the
  caller passes the wall-clock `now` that only fills advisory fields).

      :starting -> :running | :failed | :terminated
      :running  -> :failed | :snoozed | :terminated | :starting
      :snoozed  -> :starting | :failed | :terminated
      :failed, :terminated: final

  `plan/3` takes what a consistent read of the store showed — the stored
  record and whether its lease key is alive — and a request, and decides:
  either a refusal with its reason, or the new record plus what happens to
  the task's keys. `Synod.Tasks` turns a plan into one txn whose compares
  pin exactly that read (the record's mod_revision and the lease key's
  lease), so a plan made on a stale read is never applied: the txn fails,
  changes nothing, and the request is planned again on a fresh read.

  A running task whose lease key vanished (its store lease expired, on the
  leader's clock, through the log) *is* `:starting` — that is the
  `:running -> :starting` transition; a snoozed task whose snooze lease
  expired likewise. The record keeps the old status until the next write.
  """

  alias Synod.Tasks.Task

  @transitions %{
    starting: [:running, :failed, :terminated],
    running: [:failed, :snoozed, :terminated, :starting],
    snoozed: [:starting, :failed, :terminated],
    failed: [],
    terminated: []
  }

  @type reason ::
          :already_done
          | :wrong_owner
          | :lease_expired
          | :record_changed
          | {:invalid_transition, Task.status(), Task.status()}
  @type request ::
          {:reserve, pid(), pos_integer(), pos_integer()}
          | {:extend, pid()}
          | {:snooze, pid() | nil, pos_integer(), pos_integer()}
          | {:fail, pid() | nil, term()}
          | {:terminate, pid() | nil}
          | {:revoke, non_neg_integer()}
  @typedoc """
  What a plan does to the task's keys: `lease_key` put on a lease id,
  deleted or kept; the topic's active-index entry kept or deleted; a store
  lease nobody needs after the change (to revoke), or nil.
  """
  @type effects :: %{
          lease_key: {:put, pos_integer()} | :delete | :keep,
          active: :keep | :delete,
          drop_lease: pos_integer() | nil
        }

  @doc "Every status, in table order."
  @spec statuses() :: [Task.status()]
  def statuses, do: [:starting, :running, :snoozed, :failed, :terminated]

  @doc "The transition table: each status and the statuses it may go to (final ones: none)."
  @spec transitions() :: %{Task.status() => [Task.status()]}
  def transitions, do: @transitions

  @doc "Whether the table allows `from -> to`."
  @spec allowed?(Task.status(), Task.status()) :: boolean()
  def allowed?(from, to), do: to in Map.fetch!(@transitions, from)

  @doc "`:ok`, or why `from -> to` is refused (`:already_done` from a final status)."
  @spec transition(Task.status(), Task.status()) :: :ok | {:error, reason()}
  def transition(from, to) do
    cond do
      from in [:failed, :terminated] -> {:error, :already_done}
      allowed?(from, to) -> :ok
      true -> {:error, {:invalid_transition, from, to}}
    end
  end

  @doc "The task as a reader sees it: an expired lease or snooze reads as `:starting`, unowned."
  @spec effective(Task.t(), boolean()) :: Task.t()
  def effective(%Task{status: s} = t, false) when s in [:running, :snoozed],
    do: %{t | status: :starting, owner: nil, lease_id: 0}

  def effective(t, _live), do: t

  @doc """
  Decides `request` on the stored record `t` (with its `record_ver`) whose
  lease key is alive or not (`live`). `now` is wall-clock ms for the
  advisory fields. Returns the record to write and the effects, or the
  reason for refusing.
  """
  @spec plan({Task.t(), boolean()}, request(), integer()) ::
          {:ok, Task.t(), effects()} | {:error, reason()}
  def plan({t, live}, request, now) do
    from = effective(t, live).status

    with :ok <- admissible(t, live, from, request) do
      {:ok, next(t, live, request, now), effects(t, live, request)}
    end
  end

  # The checks, in the order callers see them: a final task is done; then
  # the record version (revoke) or the owner; then the table.
  defp admissible(_t, _live, from, _request) when from in [:failed, :terminated],
    do: {:error, :already_done}

  defp admissible(t, _live, from, {:revoke, ver}) do
    if ver == t.record_ver, do: transition(from, :starting), else: {:error, :record_changed}
  end

  defp admissible(_t, _live, from, {:reserve, _pid, _lease, _ms}), do: transition(from, :running)

  defp admissible(t, live, from, request) do
    with :ok <- owner(t, live, elem(request, 1)) do
      case request do
        {:extend, _} -> if from == :running, do: :ok, else: {:error, :lease_expired}
        {:snooze, _, _, _} -> transition(from, :snoozed)
        {:fail, _, _} -> transition(from, :failed)
        {:terminate, _} -> transition(from, :terminated)
      end
    end
  end

  # The caller must be the effective owner (nil for a task nobody holds).
  # The owner of an expired lease hears that its lease expired; anyone else
  # that the task is not theirs.
  defp owner(t, live, pid) do
    cond do
      effective(t, live).owner == pid ->
        :ok

      t.status == :running and not live and pid != nil and t.owner == pid ->
        {:error, :lease_expired}

      true ->
        {:error, :wrong_owner}
    end
  end

  defp next(t, _live, request, now) do
    t = %{t | updated_at: now}

    case request do
      {:reserve, pid, lease, ms} ->
        %{
          t
          | status: :running,
            owner: pid,
            lease_id: lease,
            lease_ms: ms,
            lease_deadline: now + ms
        }

      {:extend, _pid} ->
        %{t | lease_deadline: now + t.lease_ms}

      {:snooze, _pid, lease, ms} ->
        %{
          t
          | status: :snoozed,
            owner: nil,
            lease_id: lease,
            snooze_ms: ms,
            snooze_until: now + ms
        }

      {:fail, _pid, error} ->
        %{t | status: :failed, owner: nil, lease_id: 0, error: error}

      {:terminate, _pid} ->
        %{t | status: :terminated, owner: nil, lease_id: 0}

      {:revoke, _ver} ->
        %{t | status: :starting, owner: nil, lease_id: 0}
    end
  end

  defp effects(t, live, request) do
    old = if live and t.lease_id > 0, do: t.lease_id

    case request do
      {:reserve, _, lease, _} -> %{lease_key: {:put, lease}, active: :keep, drop_lease: nil}
      {:extend, _} -> %{lease_key: :keep, active: :keep, drop_lease: nil}
      {:snooze, _, lease, _} -> %{lease_key: {:put, lease}, active: :keep, drop_lease: old}
      {:revoke, _} -> %{lease_key: :delete, active: :keep, drop_lease: old}
      _final -> %{lease_key: :delete, active: :delete, drop_lease: old}
    end
  end
end
