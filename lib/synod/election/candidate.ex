defmodule Synod.Election.Candidate do
  @moduledoc """
  The decisions of one `Synod.Election` candidate, pure: no store, no
  processes, no clock (the caller passes `now`, a
  `System.monotonic_time(:millisecond)`). `step/3` takes the state and an
  event and returns the new state and the effects the shell
  (`Synod.Election`) must carry out, in order.

  Events:

    * `{:start, from}`, `{:stop, from}` — from the API (`from` is replied
      to through a `{:reply, from, answer}` effect; `nil` for none);
    * `{:claim_done, {lease, sent, outcome}}`, `{:claim_failed, reason}`,
      `{:release_done, result}` — a store operation the shell ran;
    * `{:renewed, lease, sent}`, `{:lease_lost, lease}`, `{:renew_error,
      lease, reason}` — what the candidate's `Synod.Coord.LeaseKeeper`
      reported (it renews the lease every `ttl / 3`, paced by the
      candidate process, and reports a lost lease once);
    * `:deadline` — the leadership deadline armed earlier may have passed;
    * `:retry` — the time asked for by `{:retry_after, ms}` has passed;
    * `{:watch_started, from}`, `{:watch_failed, reason}` — the answer to
      a `{:watch, from}` effect (an answer after an `:unwatch` is unwatched);
    * `{:seat_events, events}`, `{:seat_watch_ended, :compacted | :down}`,
      `{:seat_read, result}` — what the seat's watch or a read showed.

  Effects: `{:claim, lease}`, `{:release, seat, lease}`,
  `{:watch, from}`, `:unwatch`, `:read_seat`, `{:set_deadline, ms | nil}`
  (what `leader?/1` reads), `{:arm, ms}` (send `:deadline` at `ms`),
  `{:retry_after, ms}`, `{:notify, event}` (to subscribers), `{:run_handlers,
  token}`, `{:end_handlers, token, reason}`, `{:reply, from, answer}`.

  The rules it keeps: one store operation (claim or release) at a time,
  with one more claim after it when the seat may have emptied meanwhile;
  leadership is announced only while its deadline (the send time of the
  last confirmed renewal + `ttl`) lies ahead, and ends (deadline cleared,
  handlers ended, subscribers told) before anything is sent to the store.
  """

  defstruct ttl: nil,
            running: false,
            lease: nil,
            renewed_at: nil,
            seat: nil,
            deadline: nil,
            op: nil,
            again: false,
            watch: nil,
            starters: [],
            stoppers: [],
            out: []

  @typedoc "The seat this candidate holds: its fencing token and the revision of its last change."
  @type seat :: %{token: pos_integer(), mod: pos_integer()}
  @type t :: %__MODULE__{}
  @type event :: term()
  @type effect :: term()

  @doc "A stopped candidate whose lease lasts `ttl` ms."
  @spec new(pos_integer()) :: t()
  def new(ttl), do: %__MODULE__{ttl: ttl}

  @doc "Whether the candidate holds the seat (the shell's deadline decides `leader?/1`)."
  @spec leading?(t()) :: boolean()
  def leading?(%__MODULE__{seat: seat}), do: seat != nil

  @doc "Applies `event` at time `now`; returns the new state and the effects, in order."
  @spec step(t(), event(), integer()) :: {t(), [effect()]}
  def step(%__MODULE__{} = s, event, now) do
    s = handle(%{s | out: []}, event, now)
    {%{s | out: []}, Enum.reverse(s.out)}
  end

  # -- events -----------------------------------------------------------------------

  defp handle(%{running: true} = s, {:start, from}, _now) do
    if s.op == :claim and s.starters != [],
      do: %{s | starters: [from | s.starters]},
      else: reply(s, from, {:ok, role(s)})
  end

  defp handle(s, {:start, from}, _now), do: claim(%{s | running: true, starters: [from]})

  defp handle(%{running: false, op: nil} = s, {:stop, from}, _now), do: reply(s, from, :ok)

  defp handle(s, {:stop, from}, _now) do
    s = %{s | running: false, stoppers: [from | s.stoppers]}
    if s.op == nil, do: release(s), else: s
  end

  defp handle(%{op: :claim} = s, {:claim_done, {lease, sent, outcome}}, now) do
    renewed_at =
      cond do
        lease == nil -> nil
        sent != nil -> sent
        true -> s.renewed_at
      end

    s = %{s | lease: lease, renewed_at: renewed_at, op: nil}

    s =
      case outcome do
        {:won, seat, rev} ->
          won(s, seat, rev, now)

        {:adopted, seat, lease, sent, rev} ->
          won(%{s | lease: lease, renewed_at: sent}, seat, rev, now)

        {:occupied, rev} ->
          if s.running, do: watch_seat(s, rev + 1), else: s

        {:error, reason} ->
          s |> emit({:notify, {:error, reason}}) |> retry_later()
      end

    s = answer_starters(s, outcome)

    cond do
      not s.running and s.op == nil -> release(s)
      s.again -> claim(s)
      true -> s
    end
  end

  defp handle(%{op: :claim} = s, {:claim_failed, reason}, _now) do
    s = %{s | op: nil} |> emit({:notify, {:error, reason}}) |> retry_later()
    s = answer_starters(s, {:error, reason})
    if s.running, do: s, else: release(s)
  end

  defp handle(%{op: :release} = s, {:release_done, result}, _now) do
    s =
      case result do
        {:error, reason} -> emit(s, {:notify, {:error, {:release, reason}}})
        _ -> s
      end

    s = Enum.reduce(Enum.reverse(s.stoppers), s, &reply(&2, &1, :ok))
    s = %{s | op: nil, stoppers: [], lease: nil, renewed_at: nil}
    if s.running, do: claim(s), else: s
  end

  defp handle(%{lease: lease} = s, {:renewed, lease, sent}, _now) do
    s = %{s | renewed_at: max(s.renewed_at || sent, sent)}
    if s.seat, do: set_deadline(s, s.renewed_at + s.ttl), else: s
  end

  defp handle(%{lease: lease} = s, {:lease_lost, lease}, _now) do
    s = %{s | lease: nil, renewed_at: nil}
    if s.seat, do: s |> lose(:lease_expired) |> claim(), else: s
  end

  defp handle(%{lease: lease} = s, {:renew_error, lease, reason}, _now),
    do: emit(s, {:notify, {:error, reason}})

  # Reports about a lease no longer in use fall through to the last clause.

  defp handle(%{seat: seat} = s, :deadline, now) when seat != nil do
    if now >= s.deadline, do: s |> lose(:lease_expired) |> claim(), else: s
  end

  defp handle(s, :deadline, _now), do: s

  # A leader whose seat watch could not be set up watches again from its
  # seat's revision; anyone else claims (which reads the seat and watches).
  defp handle(%{seat: %{mod: mod}, watch: nil} = s, :retry, _now), do: watch_seat(s, mod + 1)
  defp handle(s, :retry, _now), do: claim(s)

  defp handle(%{watch: :pending} = s, {:watch_started, from}, _now), do: %{s | watch: from - 1}
  defp handle(s, {:watch_started, _from}, _now), do: emit(s, :unwatch)

  # Without a watch the seat's changes go unseen: claim again later, which
  # reads the seat and watches again.
  defp handle(s, {:watch_failed, reason}, _now),
    do: %{s | watch: nil} |> emit({:notify, {:error, {:watch, reason}}}) |> retry_later()

  defp handle(%{watch: last} = s, {:seat_events, events}, _now) when is_integer(last) do
    s = %{s | watch: events |> List.last() |> elem(1)}

    # Events at or before our own seat's last change are history we knew
    # when we took it (a watch set up while waiting may deliver them late).
    Enum.reduce(events, s, fn
      {_, rev, _kv, _prev}, %{seat: %{mod: mod}} = st when rev <= mod ->
        st

      {:delete, _rev, _kv, _prev}, st ->
        st |> lose(:seat_lost) |> claim()

      {:put, _rev, kv, _prev}, %{seat: %{token: token}} = st when kv.create_revision != token ->
        lose(st, :seat_lost)

      _, st ->
        st
    end)
  end

  defp handle(s, {:seat_events, _events}, _now), do: s

  # History compacted past our position: a leader reads its seat (it cannot
  # know whether the seat changed in the compacted history); anyone else
  # re-reads it through a claim.
  defp handle(s, {:seat_watch_ended, :compacted}, _now) do
    s = %{s | watch: nil}
    if s.seat, do: emit(s, :read_seat), else: claim(s)
  end

  defp handle(%{watch: last} = s, {:seat_watch_ended, :down}, _now) when is_integer(last),
    do: emit(%{s | watch: :pending}, {:watch, last + 1})

  defp handle(s, {:seat_watch_ended, :down}, _now), do: s

  defp handle(s, {:seat_read, result}, _now) do
    case {result, s.seat} do
      {{:ok, %{create_revision: token, mod_revision: rev}}, %{token: token}} ->
        watch_seat(s, rev + 1)

      {{:ok, _}, _} ->
        s |> lose(:seat_lost) |> claim()

      {{:error, reason}, _} ->
        s |> emit({:notify, {:error, reason}}) |> lose(:seat_lost) |> claim()
    end
  end

  # Anything else (an answer that comes too late, a stray event) changes nothing.
  defp handle(s, _event, _now), do: s

  # -- claiming -----------------------------------------------------------------------

  # Runs one claim unless the candidate is stopped or holds the seat. With a
  # claim or release under way, one more claim follows it (its answer may
  # predate the change that called for this one).
  defp claim(%{running: true, op: nil, seat: nil} = s),
    do: emit(%{s | op: :claim, again: false}, {:claim, s.lease})

  defp claim(%{running: true, seat: nil} = s), do: %{s | again: true}
  defp claim(s), do: s

  # A claim won or adopted. If the candidate was stopped meanwhile, the seat
  # is released (by the caller). If the lease's last confirmed renewal is
  # already too old, leadership is not announced: the next claim adopts the
  # seat after a fresh renewal.
  defp won(s, seat, rev, now) do
    s = %{s | seat: seat}
    deadline = s.renewed_at + s.ttl

    cond do
      not s.running ->
        s

      deadline <= now ->
        claim(%{s | seat: nil})

      true ->
        s
        |> set_deadline(deadline)
        |> watch_seat(rev + 1)
        |> emit({:run_handlers, seat.token})
        |> emit({:notify, {:elected, seat.token}})
    end
  end

  # `start` answers once the first claim it caused has an outcome (a seat
  # won on a renewal too old is claimed again at once: that claim answers).
  defp answer_starters(%{starters: []} = s, _outcome), do: s
  defp answer_starters(%{op: :claim} = s, _outcome), do: s

  defp answer_starters(s, outcome) do
    answer =
      case outcome do
        {:error, reason} -> {:error, reason}
        _ -> {:ok, role(s)}
      end

    s = Enum.reduce(Enum.reverse(s.starters), s, &reply(&2, &1, answer))
    %{s | starters: []}
  end

  defp role(s), do: if(s.seat, do: :leader, else: :follower)

  defp retry_later(s), do: emit(s, {:retry_after, max(div(s.ttl, 3), 10)})

  defp set_deadline(s, deadline),
    do: %{s | deadline: deadline} |> emit({:set_deadline, deadline}) |> emit({:arm, deadline})

  # -- losing and releasing -----------------------------------------------------------

  defp lose(%{seat: nil} = s, _reason), do: s

  defp lose(s, reason) do
    token = s.seat.token

    %{s | seat: nil, deadline: nil}
    |> emit({:set_deadline, nil})
    |> emit({:end_handlers, token, reason})
    |> emit({:notify, {:deposed, token, reason}})
  end

  # Leadership ends locally before anything is sent; then the seat is
  # deleted if it is still ours and the lease revoked.
  defp release(s) do
    seat = s.seat
    s = s |> lose(:stopped) |> unwatch()
    emit(%{s | op: :release}, {:release, seat, s.lease})
  end

  # -- watching the seat --------------------------------------------------------------

  defp watch_seat(%{watch: nil} = s, from), do: emit(%{s | watch: :pending}, {:watch, from})
  defp watch_seat(s, _from), do: s

  defp unwatch(%{watch: nil} = s), do: s
  defp unwatch(s), do: emit(%{s | watch: nil}, :unwatch)

  defp reply(s, nil, _answer), do: s
  defp reply(s, from, answer), do: emit(s, {:reply, from, answer})

  defp emit(s, effect), do: %{s | out: [effect | s.out]}
end
