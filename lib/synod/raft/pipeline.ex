defmodule Synod.Raft.Pipeline do
  @moduledoc """
  Asynchronous commands: send now, get `{ref, result}` once applied, with
  many commands in flight from one process and a bounded window.

      pipe = Synod.Raft.Pipeline.new(:config, window: 1_000)
      {:ok, ref, pipe} = Synod.Raft.Pipeline.send(pipe, {:put, :a, 1})
      {:ok, ^ref, {:ok, nil}, pipe} = Synod.Raft.Pipeline.next(pipe, 5_000)

  A pipeline is a value owned by one process (like a map, not a process):
  every function returns the new pipeline. Commands go straight to the
  leader (the node's leader cache, `Synod.Raft.Router`) without waiting for
  each other, so the leader batches them into few disk writes; each result
  is what `Synod.Raft.command/3` would have returned, `{:ok, machine_result}`
  or `{:error, reason}`.

  **Window and back-pressure.** At most `window:` commands (default 1,024)
  are in flight; `send/2` on a full pipeline answers `{:error, :busy}` at
  once and sends nothing. Take results (`next/2`, or `check/2` in a
  process's `handle_info`) to make room. The window bounds the leader's
  work for this client and the memory of both sides.

  **Failures.** A `not_leader` answer is re-sent at once to the leader it
  names; a leader that goes away (its member's monitor fires), or an entry
  it lost with its leadership, is re-sent to the next leader. Every re-send
  carries the command's first request id, so the group applies each command
  once. A command not answered within `timeout:` (default 5,000 ms) from its
  send gets `{:error, :timeout}` (its outcome is unknown, as for
  `command/3`). Results arrive in any order; each once.

  **Messages.** Answers come to the owner as messages tagged with the
  pipeline's alias, and member monitors as `:DOWN` messages;
  `next/2` takes only those, and `check/2` says `:not_mine` to any other
  message, so a pipeline lives happily inside a GenServer.
  """

  import Kernel, except: [send: 2]

  alias Synod.Raft.Router

  @enforce_keys [:group, :name, :alias, :window, :timeout]
  defstruct [
    :group,
    :name,
    :alias,
    :window,
    :timeout,
    # ref => %{command, id, target, tag, deadline}
    entries: %{},
    # attempt tag => ref
    tags: %{},
    # target node => monitor ref
    monitors: %{},
    # results that came in a batch and were not taken yet: [{ref, result}]
    ready: [],
    next_expiry: nil
  ]

  @opaque t :: %__MODULE__{}
  @type result :: {:ok, term()} | {:error, term()}

  # How often overdue commands are looked for (ms).
  @expiry_every 50

  @doc """
  A pipeline for commands to `group`. Options: `window:` (commands in
  flight, default 1,024), `timeout:` (ms each command may take, default
  5,000).
  """
  @spec new(atom(), keyword()) :: t()
  def new(group, opts \\ []) when is_atom(group) do
    opts =
      Synod.Coord.Options.validate!(opts,
        window: [type: :pos_integer, default: 1_024],
        timeout: [type: :pos_integer, default: 5_000]
      )

    %__MODULE__{
      group: group,
      name: Synod.Raft.member_name(group),
      alias: :erlang.alias(),
      window: opts.window,
      timeout: opts.timeout
    }
  end

  @doc "How many commands are in flight."
  @spec in_flight(t()) :: non_neg_integer()
  def in_flight(%__MODULE__{entries: e}), do: map_size(e)

  @doc """
  Sends `command` now: `{:ok, ref, pipe}`, or `{:error, :busy}` when the
  window is full, or `{:error, {:unknown_group, group}}` / `{:error,
  :timeout}` when no leader can be found within the pipeline's timeout.
  """
  @spec send(t(), term()) :: {:ok, reference(), t()} | {:error, term()}
  def send(%__MODULE__{} = p, command) do
    if map_size(p.entries) >= p.window do
      {:error, :busy}
    else
      deadline = now() + p.timeout

      with {:ok, target} <- Router.leader_node(p.group, deadline) do
        ref = make_ref()
        entry = %{command: command, id: make_ref(), target: nil, tag: nil, deadline: deadline}
        {:ok, ref, p |> schedule_expiry() |> transmit(ref, entry, target)}
      end
    end
  end

  @doc """
  Waits up to `wait` ms (or `:infinity`) for the next result:
  `{:ok, ref, result, pipe}`, or `{:timeout, pipe}` when none came. With
  nothing in flight it answers `{:timeout, pipe}` at once.
  """
  @spec next(t(), timeout()) :: {:ok, reference(), result(), t()} | {:timeout, t()}
  def next(p, wait \\ :infinity)

  def next(%__MODULE__{ready: [{ref, result} | rest]} = p, _wait),
    do: {:ok, ref, result, %{p | ready: rest}}

  def next(%__MODULE__{entries: e} = p, _wait) when map_size(e) == 0, do: {:timeout, p}

  def next(%__MODULE__{} = p, wait) do
    deadline = if wait == :infinity, do: :infinity, else: now() + wait

    # Overdue commands are looked for on schedule even while answers flow.
    if now() >= p.next_expiry,
      do: expired(p, wait, deadline),
      else: take(p, wait, deadline)
  end

  defp take(%__MODULE__{alias: a, name: name} = p, wait, deadline) do
    receive do
      {[[:alias | ^a] | _], _} = msg -> handled(p, msg, wait, deadline)
      {:DOWN, _, :process, {^name, _}, _} = msg -> handled(p, msg, wait, deadline)
    after
      wait_for(p, deadline) -> expired(p, wait, deadline)
    end
  end

  defp handled(p, msg, wait, deadline) do
    case check(p, msg) do
      {:ok, _, _, _} = done -> done
      {:pending, p} -> again(p, wait, deadline)
    end
  end

  defp expired(p, wait, deadline) do
    case expire(p) do
      {:ok, _, _, _} = done -> done
      {:pending, p} -> again(p, wait, deadline)
    end
  end

  defp again(p, wait, deadline) do
    case remaining(wait, deadline) do
      0 -> {:timeout, p}
      left -> next(p, left)
    end
  end

  @doc """
  Handles one message of the owner's mailbox: `{:ok, ref, result, pipe}`
  for a result, `{:pending, pipe}` for a message of the pipeline that ends
  nothing yet (a redirect, a re-send), `:not_mine` for any other message.
  The leader answers the commands of one pipeline that it applied together
  in one message: `check/2` then returns the first result and keeps the
  others in the pipeline; take them with `next(pipe, 0)` (which answers
  them before looking at the mailbox) until it says `{:timeout, pipe}`.
  A process that uses `check/2` should call `expire/1` now and then (every
  50 ms is plenty) to time out commands that got no answer. A re-send
  while the group has no leader at all waits for one (backing off, at most
  until the command's timeout), as `Synod.Raft.command/3` does.
  """
  @spec check(t(), term()) :: {:ok, reference(), result(), t()} | {:pending, t()} | :not_mine
  def check(%__MODULE__{alias: a} = p, {[[:alias | a] | :synod_batch], answers})
      when is_list(answers) do
    {done, p} =
      Enum.reduce(answers, {[], p}, fn
        {tag, answer}, {done, p} ->
          case check(p, {[[:alias | a] | tag], answer}) do
            {:ok, ref, result, p} -> {[{ref, result} | done], p}
            {:pending, p} -> {done, p}
          end

        _junk, acc ->
          acc
      end)

    case done ++ p.ready do
      [] -> {:pending, p}
      [{ref, result} | rest] -> {:ok, ref, result, %{p | ready: rest}}
    end
  end

  def check(%__MODULE__{alias: a} = p, {[[:alias | a] | tag], answer}) do
    case Map.pop(p.tags, tag) do
      {nil, _} -> {:pending, p}
      {ref, tags} -> answered(%{p | tags: tags}, ref, Map.fetch!(p.entries, ref), answer)
    end
  end

  def check(%__MODULE__{name: name} = p, {:DOWN, mref, :process, {name, node}, _}) do
    case p.monitors do
      %{^node => ^mref} ->
        {:pending, resend_from(%{p | monitors: Map.delete(p.monitors, node)}, node)}

      _ ->
        {:pending, p}
    end
  end

  def check(_p, _msg), do: :not_mine

  @doc """
  Ends the first command past its timeout: `{:ok, ref, {:error, :timeout},
  pipe}`, or `{:pending, pipe}` if none is.
  """
  @spec expire(t()) :: {:ok, reference(), result(), t()} | {:pending, t()}
  def expire(p) do
    t = now()

    case Enum.find(p.entries, fn {_ref, e} -> e.deadline <= t end) do
      nil -> {:pending, %{p | next_expiry: nil} |> schedule_expiry()}
      {ref, e} -> {:ok, ref, {:error, :timeout}, forget_entry(p, ref, e)}
    end
  end

  # -- internals -------------------------------------------------------------------

  defp answered(p, ref, entry, answer) do
    case answer do
      {:error, {:not_leader, hint}} when is_atom(hint) and hint != nil and hint != entry.target ->
        Router.learn(p.group, hint)
        {:pending, transmit(p, ref, entry, hint)}

      {:error, reason}
      when reason in [:dropped, :unknown_outcome] or
             (is_tuple(reason) and elem(reason, 0) == :not_leader) ->
        Router.forget(p.group, entry.target)
        relocate(p, ref, entry, entry.target)

      answer ->
        Router.learn(p.group, entry.target)
        {:ok, ref, answer, forget_entry(p, ref, entry)}
    end
  end

  # Sends again, to the leader found now (waiting while there is none).
  defp relocate(p, ref, entry, failed) do
    case Router.leader_node(p.group, entry.deadline, failed) do
      {:ok, target} -> {:pending, transmit(p, ref, entry, target)}
      {:error, _} = error -> {:ok, ref, error, forget_entry(p, ref, entry)}
    end
  end

  # Every command sent to `node`, whose member went away, goes elsewhere.
  defp resend_from(p, node) do
    Router.forget(p.group, node)

    p.entries
    |> Enum.filter(fn {_ref, e} -> e.target == node end)
    |> Enum.reduce(p, fn {ref, e}, p ->
      case relocate(p, ref, e, node) do
        {:pending, p} -> p
        # No leader in time: the command's own timeout will end it.
        {:ok, _, _, _} -> p
      end
    end)
  end

  # The tag's {:synod_batch, _} form tells the member this caller takes its
  # answers in batches (one message per applied batch, `check/2`); a
  # member that does not know it answers each one alone, as to any call.
  defp transmit(p, ref, entry, target) do
    tag = {:synod_batch, make_ref()}
    request = {:command, entry.command, entry.id}
    Kernel.send({p.name, target}, {:"$gen_call", {self(), [[:alias | p.alias] | tag]}, request})
    tags = p.tags |> Map.delete(entry.tag) |> Map.put(tag, ref)
    entry = %{entry | target: target, tag: tag}
    monitor(%{p | tags: tags, entries: Map.put(p.entries, ref, entry)}, target)
  end

  defp monitor(p, target) do
    if Map.has_key?(p.monitors, target),
      do: p,
      else: %{p | monitors: Map.put(p.monitors, target, Process.monitor({p.name, target}))}
  end

  defp forget_entry(p, ref, entry) do
    %{p | entries: Map.delete(p.entries, ref), tags: Map.delete(p.tags, entry.tag)}
  end

  defp schedule_expiry(%{next_expiry: nil} = p), do: %{p | next_expiry: now() + @expiry_every}
  defp schedule_expiry(p), do: p

  defp wait_for(p, deadline) do
    until = if deadline == :infinity, do: p.next_expiry, else: min(p.next_expiry, deadline)
    max(until - now(), 0)
  end

  defp remaining(:infinity, _), do: :infinity
  defp remaining(_wait, deadline), do: max(deadline - now(), 0)

  defp now, do: System.monotonic_time(:millisecond)
end
