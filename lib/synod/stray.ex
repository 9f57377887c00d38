defmodule Synod.Stray do
  @moduledoc false
  # What a Synod process that takes input from other nodes does with input
  # it does not understand (docs/hub.md, "Stray input"; the hub, the store,
  # the Raft member, router and info): an unknown call is answered
  # `{:error, {:bad_request, request}}`, an unknown cast or message is
  # dropped, and either is logged at most once a second per process, with a
  # count of what was dropped since the last report. A call whose `from` is
  # not `{pid, tag}` (which gen_server's reply would crash on) is dropped
  # without an answer. `warn/1` is the same rate-limited warning for other
  # repeated conditions (a member that cannot write its disk).
  #
  # `who` names the process in the log line: a string, or a function that
  # builds it, called for every ignored stray (even one whose line the rate
  # limit then drops), never for an accepted request. The processes on
  # the store's request path (the Raft member, the leases and the watcher) pass
  # a function: building "raft :name member" with inspect/1 costs more than
  # the rest of an accepted call's checks, and they take every request.

  require Logger

  @interval 1_000

  @typedoc "The process's name in a log line, or a function that builds it for an ignored stray."
  @type who :: String.t() | (() -> String.t())

  @doc "The answer to a call the process does not know."
  @spec bad_request(term()) :: {:error, {:bad_request, term()}}
  def bad_request(request), do: {:error, {:bad_request, request}}

  @doc """
  A gen_server's `handle_call/3` for a process that takes calls from other
  nodes: `fun.(request, from, state)` when `accepted?`, else the bad-request
  answer; nothing (and no crash in gen_server's reply) for a bad `from`.
  """
  @spec call(term(), term(), state, who(), boolean(), (term(), term(), state -> result)) ::
          result | {:reply, term(), state} | {:noreply, state}
        when state: term(), result: term()
  def call(request, from, state, who, accepted?, fun) do
    cond do
      not from?(from) ->
        ignored(who, :call, request)
        {:noreply, state}

      accepted? ->
        fun.(request, from, state)

      true ->
        ignored(who, :call, request)
        {:reply, bad_request(request), state}
    end
  end

  @doc "A gen_server's `handle_cast/2` for a process that takes no casts."
  @spec cast(term(), state, who()) :: {:noreply, state} when state: term()
  def cast(request, state, who) do
    ignored(who, :cast, request)
    {:noreply, state}
  end

  @doc "Whether `from` is a gen_server caller that a reply can go to."
  @spec from?(term()) :: boolean()
  def from?({pid, _tag}) when is_pid(pid), do: true
  def from?(_), do: false

  @doc "Logs (rate-limited) that `who` ignored a `kind` (call, cast, message)."
  @spec ignored(who(), atom(), term()) :: :ok
  def ignored(who, kind, term) when is_function(who, 0), do: ignored(who.(), kind, term)

  def ignored(who, kind, term),
    do: warn("#{who} ignored a #{kind}: #{inspect(term, limit: 8, printable_limit: 100)}")

  @doc "Logs a warning, at most one a second for this process (the others are counted)."
  @spec warn(String.t()) :: :ok
  def warn(text) do
    now = System.monotonic_time(:millisecond)

    case Process.get(:synod_stray) do
      {last, dropped} when now - last < @interval ->
        Process.put(:synod_stray, {last, dropped + 1})

      previous ->
        Process.put(:synod_stray, {now, 0})

        more =
          case previous do
            {_, dropped} when dropped > 0 -> " (and #{dropped} more since the last report)"
            _ -> ""
          end

        Logger.warning(text <> more)
    end

    :ok
  end
end
