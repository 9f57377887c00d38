defmodule Synod.Dispatcher do
  @moduledoc """
  The five operations every hub member performs, as plain messages.

  This module only builds and sends the messages documented in
  `docs/protocol.md`; any BEAM node (or the C node) can send the same terms
  with `send/2` or `GenServer.call/3` and no Synod code. A hub's coordinator
  is the process registered under the hub's name on each member node, so it
  is addressed as `{hub, node}`.

    * `children_start/2` — one batched start request per target node;
    * `children_stop/2` — one batched stop request per target node;
    * `dispatch_event/4` — put an event on the hub's event queue;
    * `propagate_event/3` — send an event to chosen members;
    * `reply_respondents/5` — answer every caller waiting on a child.
  """

  alias Synod.Hub.Options

  @typedoc "A child as sent to its owner: `{child_id, child_spec, metadata, mode}`."
  @type start_entry :: {term(), map(), map() | nil, :active | :passive}

  @typedoc """
  A start request for one node: the request reference, the processes that
  get the answers, the children, and options (`migration: true` makes an
  already-running child an answer of `{:ok, pid}`; see docs/protocol.md).
  """
  @type start_request :: {reference(), [pid()], [start_entry()], keyword()}
  @type stop_request :: {reference(), [pid()], [term()], keyword()}
  @type members :: :global | :local | :external | [node()]

  @doc """
  Sends each `{node, {ref, reply_to, entries, opts}}` to the hub's
  coordinator on `node` as `{:synod_start, ref, reply_to, entries, opts}`.
  Each node answers every pid in `reply_to` with one
  `{:synod_results, ref, node, [{child_id, {:ok, pid} | {:error, reason}}]}`.
  """
  @spec children_start(atom(), [{node(), start_request()}]) :: :ok
  def children_start(hub, node_requests) when is_atom(hub) and is_list(node_requests) do
    for {node, {ref, reply_to, entries, opts}} <- node_requests do
      send({hub, node}, {:synod_start, ref, reply_to, entries, opts})
    end

    :ok
  end

  @doc """
  Sends each `{node, {ref, reply_to, child_ids, opts}}` to the hub's
  coordinator on `node` as `{:synod_stop, ref, reply_to, child_ids, opts}`.
  Answers as for `children_start/2`, with `{:ok, stopped_pid}` or
  `{:error, :not_found}` per child.
  """
  @spec children_stop(atom(), [{node(), stop_request()}]) :: :ok
  def children_stop(hub, node_requests) when is_atom(hub) and is_list(node_requests) do
    for {node, {ref, reply_to, ids, opts}} <- node_requests do
      send({hub, node}, {:synod_stop, ref, reply_to, ids, opts})
    end

    :ok
  end

  @doc """
  Puts `{event_id, data}` on the hub's event queue on this node, and sends it
  to the other members chosen by `:members` (default `:local`).

  Answers `{:ok, :event_dispatched}` when this node's queue delivered it to
  its subscribers now, `{:ok, :event_queued}` when the queue is paused (the
  hub is redistributing children) and it will be delivered on resume, and
  `{:ok, :event_discarded}` when the queue is paused and `discard: true`.
  Remote members apply the same rule to their own queues.

  Options, as a keyword list or as a map (`%{discard_event: true, members:
  :global}`, the shape of ProcessHub's `dispatch_event/4`): `:discard` (or
  `:discard_event`) drops the event instead of queueing it while paused;
  `:members` as in `propagate_event/3`; `:timeout` for the local answer
  (5000 ms). Raises `ArgumentError` for an unknown or bad option or an
  unknown hub.
  """
  @spec dispatch_event(atom(), atom(), term(), keyword() | map()) ::
          {:ok, :event_dispatched | :event_queued | :event_discarded}
  def dispatch_event(hub, event_id, data, opts \\ []) when is_atom(hub) and is_atom(event_id) do
    %{discard: discard, members: members, timeout: timeout} = Options.event!(opts)
    targets = targets(hub, members)

    for node <- targets, node != node() do
      send({hub, node}, {:synod_event, event_id, data, discard})
    end

    if node() in targets do
      GenServer.call(hub, {:synod_dispatch_event, event_id, data, discard}, timeout)
    else
      {:ok, :event_dispatched}
    end
  end

  @doc """
  Sends `event` — `{event_id, data}` — to the hub's coordinator on each
  chosen member as `{:synod_event, event_id, data, false}`; each delivers
  it to its local subscribers (or queues it while paused). `:members` is
  `:global` (default, every member), `:local` (this node), `:external`
  (every member but this node) or a list of nodes (those that are members).
  """
  @spec propagate_event(atom(), {atom(), term()}, keyword()) :: :ok
  def propagate_event(hub, {event_id, data}, opts \\ [])
      when is_atom(hub) and is_atom(event_id) do
    %{members: members} = Options.propagate!(opts)

    for node <- targets(hub, members),
        do: send({hub, node}, {:synod_event, event_id, data, false})

    :ok
  end

  @doc """
  Sends `{key, child_id, result, node}` to every pid in `respondents`.
  A request's waiting caller accepts this per-child form (with `key` the
  request reference) as well as the batched `:synod_results` form.
  """
  @spec reply_respondents([pid()], term(), term(), term(), node()) :: :ok
  def reply_respondents(respondents, key, child_id, result, node) do
    for pid <- respondents, do: send(pid, {key, child_id, result, node})
    :ok
  end

  defp targets(hub, members) do
    all = Synod.members(hub)

    case members do
      :global -> all
      :local -> [node()]
      :external -> all -- [node()]
      list -> Enum.filter(list, &(&1 in all))
    end
  end
end
