defmodule Synod.Raft.Watches do
  @moduledoc false
  # Leader watches of one group on this node. The member sends every change
  # of role or leader here ({:raft_events, Changes}) and goes on at once; this
  # process hands each change to the watches that want it, so no watch can
  # slow consensus down:
  #
  #   * a pid watch gets a message, {:synod_leader_watch, Group, Key, Event,
  #     Before, After};
  #   * a function watch has a worker process of its own that calls
  #     fun.(Key, Event, Before, After) for each change, in order. A slow
  #     function delays only its own watch; one that raises is logged and the
  #     watch stays; a worker that dies is replaced.
  #
  # Events are :become_leader and :become_follower (the member's new role is
  # leader or follower; a follower that learns of a new leader gets
  # :become_follower too). Before and After are the member's whole view
  # (view/0): role, leader and term from the change itself; commit and
  # applied index, the voters' nodes and which members are witnesses, as the member reports them when the
  # change is delivered (one status call per batch of changes), so After's
  # indexes are at least those of the change. Before's are those of the
  # previous delivery (the first one's, the same as After's).

  use GenServer
  require Logger

  alias Synod.Stray

  @type view :: %{
          role: atom(),
          leader: node() | nil,
          term: non_neg_integer(),
          commit: non_neg_integer() | nil,
          applied: non_neg_integer() | nil,
          voters: [node()] | nil,
          witnesses: [node()] | nil
        }

  @status_timeout 1_000

  def name(group), do: :"Synod.Raft.Watches.#{group}"

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts[:name], name: name(opts[:name]))

  @impl true
  def init(group), do: {:ok, %{group: group, watches: %{}, workers: %{}, indexes: nil}}

  @impl true
  # Synod.Raft.add_leader_watch/4 checked the arguments; a call from
  # elsewhere with any other target is stray input.
  def handle_call({:add, key, target, type}, _from, state)
      when is_pid(target) or is_function(target, 4) do
    state = remove(state, key)
    {:reply, :ok, put_in(state.watches[key], start(state.group, key, target, type))}
  end

  def handle_call({:remove, key}, _from, state), do: {:reply, :ok, remove(state, key)}

  def handle_call(:list, _from, state) do
    {:reply, Enum.map(state.watches, fn {k, w} -> {k, w.type} end), state}
  end

  def handle_call(request, from, state),
    do:
      Stray.call(request, from, state, who(state.group), false, fn _, _, state ->
        {:noreply, state}
      end)

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, who(state.group))

  @impl true
  def handle_info({:raft_events, changes}, state) do
    now = if state.watches == %{}, do: state.indexes, else: indexes(state.group)
    previous = state.indexes || now

    for {event, _cause, before, after_} <- changes,
        event in [:become_leader, :become_follower],
        {key, watch} <- state.watches,
        watch.type in [:all, event] do
      deliver(state.group, key, watch, event, Map.merge(before, previous), Map.merge(after_, now))
    end

    {:noreply, %{state | indexes: now}}
  end

  def handle_info({:DOWN, _ref, :process, pid, reason}, state) do
    case Enum.find(state.watches, fn {_k, w} -> w[:worker] == pid or w[:pid] == pid end) do
      {key, %{pid: ^pid}} ->
        # A pid watch ends with its process.
        {:noreply, %{state | watches: Map.delete(state.watches, key)}}

      {key, watch} ->
        Logger.warning(
          "leader watch #{inspect(key)} of #{state.group}: worker died (#{inspect(reason)}), restarted"
        )

        {:noreply, put_in(state.watches[key], start(state.group, key, watch.fun, watch.type))}

      nil ->
        {:noreply, state}
    end
  end

  def handle_info(other, state) do
    Stray.ignored(who(state.group), :message, other)
    {:noreply, state}
  end

  # The name in Synod.Stray's log lines, built only when one is logged.
  defp who(name), do: fn -> "raft #{inspect(name)} leader watches" end

  # The parts of the member's view that its changes do not carry.
  defp indexes(group) do
    status = GenServer.call(Synod.Raft.member_name(group), :status, @status_timeout)

    %{
      commit: status.commit,
      applied: status.applied,
      voters: status.voter_nodes,
      witnesses: status.witness_nodes
    }
  catch
    :exit, _ -> %{commit: nil, applied: nil, voters: nil, witnesses: nil}
  end

  defp start(_group, _key, pid, type) when is_pid(pid) do
    %{pid: pid, type: type, ref: Process.monitor(pid)}
  end

  defp start(group, key, fun, type) when is_function(fun, 4) do
    {worker, _ref} = spawn_monitor(fn -> worker(group, key, fun) end)
    %{fun: fun, worker: worker, type: type}
  end

  defp remove(state, key) do
    case Map.pop(state.watches, key) do
      {%{worker: worker}, watches} ->
        Process.exit(worker, :kill)
        %{state | watches: watches}

      {%{ref: ref}, watches} ->
        Process.demonitor(ref, [:flush])
        %{state | watches: watches}

      {nil, watches} ->
        %{state | watches: watches}
    end
  end

  defp deliver(group, key, %{pid: pid}, event, before, after_),
    do: send(pid, {:synod_leader_watch, group, key, event, before, after_})

  defp deliver(_group, _key, %{worker: worker}, event, before, after_),
    do: send(worker, {:event, event, before, after_})

  defp worker(group, key, fun) do
    receive do
      {:event, event, before, after_} ->
        try do
          fun.(key, event, before, after_)
        catch
          kind, reason ->
            Logger.error(
              "leader watch #{inspect(key)} of #{group} failed on #{event}: " <>
                Exception.format(kind, reason, __STACKTRACE__)
            )
        end

        worker(group, key, fun)
    end
  end
end
