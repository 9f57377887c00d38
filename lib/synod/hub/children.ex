defmodule Synod.Hub.Children do
  @moduledoc false
  # The node's supervisor of hub children: a one_for_one supervisor, like a
  # DynamicSupervisor, that starts and stops children in *batches* and tells
  # the coordinator about every exit it did not ask for.
  #
  # Why not DynamicSupervisor: the coordinator starts children in batches of
  # tens of thousands. Through DynamicSupervisor that is one call per child,
  # plus a monitor on each child (to see exits) and a notice from a start
  # wrapper (to see restarts): three signals per child, each waking a
  # process. Here a batch is one call; the supervisor's links (which every
  # supervisor has) are how exits are seen; and exits and restarts reach the
  # coordinator as one message each, in the order this process saw them.
  # docs/hub.md, "Supervision", has the measurements.
  #
  # Semantics kept from DynamicSupervisor: children are linked to this
  # process; :permanent children are restarted after any exit, :transient
  # ones after an abnormal exit, :temporary ones never; more than
  # `max_restarts` restarts within `max_seconds` shuts this supervisor down
  # (and, :one_for_all, the hub on this node); on shutdown every child gets
  # its `shutdown` (brutal_kill, a timeout then kill, or infinity), all at
  # once. It answers `:which_children` and `:count_children` in the
  # supervisor format, so DynamicSupervisor.which_children/1 and
  # count_children/1 (and observer) work on it.
  #
  # Children are known by child id: one process per id on this node (a start
  # for an id that runs answers the running pid), and a stop names the id,
  # so it stops whichever incarnation runs now.
  #
  # Messages to the coordinator (registered as the hub's name):
  #   {:synod_child_exit, token, id, old_pid, reason, new_pid | nil}
  # new_pid is the restarted child, nil when it is not restarted; token is a
  # reference the coordinator learns from attach/1, so no other process can
  # pass for this one.
  #
  # It outlives the coordinator (docs/hub.md, "A coordinator crash keeps the
  # children"): it is the heir of the coordinator's registry tables, keeps
  # them while no coordinator runs, and hands them and the list of its
  # children to the next one (attach/1). Only the coordinator may start,
  # stop or attach; anyone may ask which_children and count_children; any
  # other input is stray (Synod.Hub.Stray).

  use GenServer
  require Logger

  alias Synod.Hub.{Spec, Stray}

  @doc false
  def start_link(cfg),
    do: GenServer.start_link(__MODULE__, cfg, name: Synod.Hub.Supervisor.children_name(cfg.name))

  @doc false
  def child_spec(cfg),
    do: %{
      id: __MODULE__,
      start: {__MODULE__, :start_link, [cfg]},
      type: :supervisor,
      shutdown: :infinity
    }

  @doc "Starts `[{id, stored_spec}]`; answers `[{id, {:ok, pid} | {:error, reason}}]` in order."
  @spec start_batch(GenServer.server(), [{term(), tuple() | map()}]) :: [{term(), term()}]
  def start_batch(_sup, []), do: []
  def start_batch(sup, children), do: GenServer.call(sup, {:start_batch, children}, :infinity)

  @doc "Stops the children with these ids; answers `[{id, {:ok, pid} | {:error, :not_found}}]`."
  @spec stop_batch(GenServer.server(), [term()]) :: [{term(), term()}]
  def stop_batch(_sup, []), do: []
  def stop_batch(sup, ids), do: GenServer.call(sup, {:stop_batch, ids}, :infinity)

  @doc """
  Stops the children with these ids as `stop_batch/2` does, answering only
  how many it stopped: for a coordinator, which knows each copy's pid from
  its rows (no answer list built and copied back).
  """
  @spec stop_ids(GenServer.server(), [term()]) :: non_neg_integer()
  def stop_ids(_sup, []), do: 0
  def stop_ids(sup, ids), do: GenServer.call(sup, {:stop_ids, ids}, :infinity)

  @doc """
  Called by a starting coordinator: makes it the owner of the tables this
  process inherited from its predecessor (if any) and answers
  `{token, tables | nil, [{id, pid, stored_spec}]}` — the token of its exit
  notices, the tables, and every child running now.
  """
  @spec attach(GenServer.server()) :: {reference(), {:ets.tid(), :ets.tid()} | nil, list()}
  def attach(sup), do: GenServer.call(sup, :attach, :infinity)

  # ── server ───────────────────────────────────────────────────────────────

  @impl true
  def init(cfg) do
    Process.flag(:trap_exit, true)

    {:ok,
     %{
       hub: cfg.name,
       token: make_ref(),
       # the registry tables, while no coordinator owns them
       tables: %{},
       # id => {pid, stored spec}; pid => id
       ids: %{},
       pids: %{},
       # id => {old_pid, spec, reason}: restarts that failed, tried again
       retrying: %{},
       restarts: [],
       max_restarts: cfg.max_restarts,
       max_seconds: cfg.max_seconds
     }}
  end

  @impl true
  def handle_call(request, from, state) do
    accepted? =
      request in [:which_children, :count_children] or
        (coordinator?(from, state) and coordinator_call?(request))

    Stray.call(request, from, state, fn -> who(state) end, accepted?, &call/3)
  end

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, who(state))

  defp who(state), do: "Synod hub children #{inspect(state.hub)} on #{node()}"

  defp coordinator?({pid, _}, state), do: Process.whereis(state.hub) == pid
  defp coordinator?(_from, _state), do: false

  defp coordinator_call?({:start_batch, children}), do: is_list(children)
  defp coordinator_call?({:stop_batch, ids}), do: is_list(ids)
  defp coordinator_call?({:stop_ids, ids}), do: is_list(ids)
  defp coordinator_call?(request), do: request == :attach

  defp call(:attach, {pid, _}, state) do
    tables =
      case state.tables do
        %{registry: registry, meta: meta} ->
          for tab <- [registry, meta], do: :ets.give_away(tab, pid, :synod_adopted)
          {registry, meta}

        _ ->
          nil
      end

    children = for {id, {child, spec}} <- state.ids, do: {id, child, spec}
    {:reply, {state.token, tables, children}, %{state | tables: %{}}}
  end

  defp call({:start_batch, children}, _from, state) do
    {results, ids, pids} =
      if bulk_start?(children, state.ids),
        do: start_bulk(children, state.ids, state.pids),
        else: start_all(children, state.ids, state.pids, [])

    {:reply, results, %{state | ids: ids, pids: pids}}
  end

  defp call({:stop_batch, ids}, _from, state) do
    {results, found} = stop_plan(ids, state.ids, [], [])
    {_stopped, state} = stop_found(state, ids, found)
    {:reply, results, state}
  end

  defp call({:stop_ids, ids}, _from, state) do
    {stopped, state} = stop_found(state, ids, found(ids, state.ids, []))
    {:reply, stopped, state}
  end

  defp call(:which_children, _from, state) do
    children =
      for {_id, {pid, spec}} <- state.ids do
        {_mfa, _restart, _shutdown, type, modules} = Spec.child_info(spec)
        {:undefined, pid, type, modules}
      end

    {:reply, children, state}
  end

  defp call(:count_children, _from, state) do
    supervisors =
      Enum.count(state.ids, fn {_, {_, spec}} -> elem(Spec.child_info(spec), 3) == :supervisor end)

    n = map_size(state.ids)

    {:reply, [specs: n, active: n, supervisors: supervisors, workers: n - supervisors], state}
  end

  @impl true
  def handle_info({:EXIT, pid, reason}, state) do
    case Map.pop(state.pids, pid) do
      {nil, _} ->
        # not a child (a linked process that is not ours): ignore, as
        # supervisors do
        {:noreply, state}

      {id, pids} ->
        {{^pid, spec}, ids} = Map.pop(state.ids, id)
        child_exited(%{state | ids: ids, pids: pids}, id, pid, spec, reason)
    end
  end

  def handle_info({:synod_restart, token, id}, %{token: token} = state) do
    # a restart that failed before: try again (it counts again), unless the
    # child was stopped or started anew meanwhile
    case Map.pop(state.retrying, id) do
      {{old_pid, spec, reason}, retrying} when not is_map_key(state.ids, id) ->
        restart(%{state | retrying: retrying}, id, old_pid, spec, reason)

      {_, retrying} ->
        {:noreply, %{state | retrying: retrying}}
    end
  end

  # The coordinator died: keep its tables for the next one.
  def handle_info({:"ETS-TRANSFER", tab, _from, {:synod_table, kind}}, state)
      when kind in [:registry, :meta],
      do: {:noreply, %{state | tables: Map.put(state.tables, kind, tab)}}

  def handle_info(message, state) do
    Stray.ignored(who(state), :message, message)
    {:noreply, state}
  end

  @impl true
  def terminate(_reason, state) do
    shutdown(for {_id, {pid, spec}} <- state.ids, do: {pid, spec})
    :ok
  end

  # ── starting ─────────────────────────────────────────────────────────────

  defp start_all([{id, spec} | children], ids, pids, results) do
    case ids do
      %{^id => {pid, _}} ->
        start_all(children, ids, pids, [{id, {:ok, pid}} | results])

      _ ->
        case start_one(spec) do
          {:ok, pid} ->
            start_all(children, Map.put(ids, id, {pid, spec}), Map.put(pids, pid, id), [
              {id, {:ok, pid}} | results
            ])

          {:error, _} = error ->
            start_all(children, ids, pids, [{id, error} | results])
        end
    end
  end

  defp start_all([], ids, pids, results), do: {Enum.reverse(results), ids, pids}

  # A big batch (at least `@bulk_start` children and half as many as run
  # here already) with no id twice: the new children are collected in
  # lists and put in the two maps at once (one map built in C and one
  # merge each), instead of one `Map.put/3` per child and map, which copies
  # a path of the growing map's tree every time. (A batch with an id twice
  # goes through start_all/4, whose map answers the second with the first's
  # pid.)
  @bulk_start 64
  defp bulk_start?(children, ids) do
    n = length(children)

    n >= @bulk_start and n * 2 >= map_size(ids) and
      map_size(:maps.from_list(children)) == n
  end

  defp start_bulk(children, ids, pids) do
    {results, new_ids, new_pids} = start_new(children, ids, [], [], [])

    {results, Map.merge(ids, :maps.from_list(new_ids)),
     Map.merge(pids, :maps.from_list(new_pids))}
  end

  defp start_new([{id, spec} | children], ids, results, new_ids, new_pids) do
    case ids do
      %{^id => {pid, _}} ->
        start_new(children, ids, [{id, {:ok, pid}} | results], new_ids, new_pids)

      _ ->
        case start_one(spec) do
          {:ok, pid} = ok ->
            start_new(children, ids, [{id, ok} | results], [{id, {pid, spec}} | new_ids], [
              {pid, id} | new_pids
            ])

          {:error, _} = error ->
            start_new(children, ids, [{id, error} | results], new_ids, new_pids)
        end
    end
  end

  defp start_new([], _ids, results, new_ids, new_pids),
    do: {:lists.reverse(results), new_ids, new_pids}

  defp start_one(spec) do
    {m, f, a} = start_mfa(spec)

    # (link/1 is a no-op for a child its start function linked, as it
    # should; one that did not is linked now, so its exit is seen.)
    case apply(m, f, a) do
      {:ok, pid} when is_pid(pid) -> {:ok, link(pid)}
      {:ok, pid, _info} when is_pid(pid) -> {:ok, link(pid)}
      :ignore -> {:error, :ignore}
      {:error, reason} -> {:error, reason}
      other -> {:error, {:bad_return, other}}
    end
  catch
    :exit, reason -> {:error, reason}
    :error, reason -> {:error, {reason, __STACKTRACE__}}
    :throw, value -> {:error, {:nocatch, value}}
  end

  # (the start MFA of a stored spec, as Spec.child_info/1 has it, without
  # building the rest of the child's info for every start)
  defp start_mfa({_, _, _} = mfa), do: mfa
  defp start_mfa(%{start: mfa}), do: mfa

  defp link(pid) do
    Process.link(pid)
    pid
  end

  # ── exits and restarts ───────────────────────────────────────────────────

  defp child_exited(state, id, pid, spec, reason) do
    {_mfa, restart, _shutdown, _type, _modules} = Spec.child_info(spec)

    if restart?(restart, reason) do
      restart(state, id, pid, spec, reason)
    else
      notify(state, id, pid, reason, nil)
      {:noreply, state}
    end
  end

  defp restart?(:permanent, _reason), do: true
  defp restart?(:temporary, _reason), do: false
  defp restart?(:transient, :normal), do: false
  defp restart?(:transient, :shutdown), do: false
  defp restart?(:transient, {:shutdown, _}), do: false
  defp restart?(:transient, _reason), do: true

  defp restart(state, id, old_pid, spec, reason) do
    now = System.monotonic_time(:millisecond)
    window = now - state.max_seconds * 1_000
    restarts = [now | Enum.filter(state.restarts, &(&1 > window))]
    state = %{state | restarts: restarts}

    if length(restarts) > state.max_restarts do
      Logger.error(
        "Synod hub #{inspect(state.hub)}: more than #{state.max_restarts} child restarts in #{state.max_seconds} s; shutting the hub down on this node"
      )

      notify(state, id, old_pid, reason, nil)
      {:stop, :shutdown, state}
    else
      case start_one(spec) do
        {:ok, pid} ->
          notify(state, id, old_pid, reason, pid)

          {:noreply,
           %{state | ids: Map.put(state.ids, id, {pid, spec}), pids: Map.put(state.pids, pid, id)}}

        {:error, error} ->
          Logger.warning(
            "Synod hub #{inspect(state.hub)}: restarting #{inspect(id)} failed (#{inspect(error)}); trying again"
          )

          send(self(), {:synod_restart, state.token, id})
          {:noreply, %{state | retrying: Map.put(state.retrying, id, {old_pid, spec, reason})}}
      end
    end
  end

  defp notify(state, id, old_pid, reason, new_pid),
    do: send(state.hub, {:synod_child_exit, state.token, id, old_pid, reason, new_pid})

  # ── stopping ─────────────────────────────────────────────────────────────

  # One pass: the answers in order and the `{pid, spec}` of the children found.
  defp stop_plan([id | ids], children, results, found) do
    case children do
      %{^id => {pid, _spec} = child} ->
        stop_plan(ids, children, [{id, {:ok, pid}} | results], [child | found])

      _ ->
        stop_plan(ids, children, [{id, {:error, :not_found}} | results], found)
    end
  end

  defp stop_plan([], _children, results, found), do: {:lists.reverse(results), found}

  # The `{pid, spec}` of the children of `ids` found (stop_plan/4 without
  # the answers).
  defp found([id | ids], children, found) do
    case children do
      %{^id => child} -> found(ids, children, [child | found])
      _ -> found(ids, children, found)
    end
  end

  defp found([], _children, found), do: found

  # Stops the children `found` (of `ids`) and drops them. (An exit a
  # stopped child sent before it was stopped is taken by shutdown/1 with
  # the others. A restart being tried again is called off: the child is
  # stopped.) When they are every child here, both maps are simply empty.
  # Returns how many children it stopped, and the state.
  defp stop_found(state, ids, found) do
    gone = shutdown(found)

    {left, pids} =
      if map_size(gone) == map_size(state.ids) and map_size(gone) == map_size(state.pids),
        do: {%{}, %{}},
        else: {without(state.ids, Map.from_keys(ids, true)), without(state.pids, gone)}

    retrying = if state.retrying == %{}, do: %{}, else: Map.drop(state.retrying, ids)
    {map_size(gone), %{state | ids: left, pids: pids, retrying: retrying}}
  end

  # Stops `[{pid, spec}]` all at once, each by its shutdown: asks it to
  # exit, kills it when its time is up, and returns when every one is gone.
  # The children are linked to this process, which traps exits: the link's
  # `{:EXIT, pid, _}` is how each one's end is seen, so a stop costs one
  # exit signal each way per child (no monitor, no unlink, whose signals
  # and acknowledgements cost as much again; docs/hub.md, "Performance"),
  # and the wait is a count going down (no clock read, no map update per
  # child). A child that unlinked itself sends no EXIT: every @recheck ms
  # the pending children that are no longer alive are counted as gone.
  # Returns the children's pids (as a map, `pid => deadline`).
  @recheck 1_000
  defp shutdown([]), do: %{}

  defp shutdown(children) do
    now = System.monotonic_time(:millisecond)
    {pending, deadlines} = exit_all(children, now, [], %{})
    # one map built in C, not one put per child
    pending = :maps.from_list(pending)
    # the distinct deadlines, soonest first (few: one per shutdown value)
    deadlines = deadlines |> Map.keys() |> Enum.sort()
    timer = next_timer(deadlines, now + @recheck, now)
    await_exits(pending, map_size(pending), deadlines, now + @recheck, timer)
    pending
  end

  # `map` without the keys of the map `gone`. Removing most of a big map
  # key by key costs many times what rebuilding it from the keys that stay
  # does (each removal copies a path of the map's tree).
  defp without(map, gone) when map_size(gone) * 2 < map_size(map),
    do: Map.drop(map, Map.keys(gone))

  defp without(map, gone), do: :maps.filter(fn key, _ -> not is_map_key(gone, key) end, map)

  defp exit_all([{pid, spec} | children], now, pending, deadlines) do
    deadline =
      case shutdown_of(spec) do
        :brutal_kill ->
          Process.exit(pid, :kill)
          :infinity

        :infinity ->
          Process.exit(pid, :shutdown)
          :infinity

        ms ->
          Process.exit(pid, :shutdown)
          now + ms
      end

    deadlines =
      if is_map_key(deadlines, deadline), do: deadlines, else: Map.put(deadlines, deadline, true)

    exit_all(children, now, [{pid, deadline} | pending], deadlines)
  end

  defp exit_all([], _now, pending, deadlines), do: {pending, deadlines}

  # (a stored spec's shutdown, as Spec.child_info/1 has it)
  defp shutdown_of({_, _, _}), do: 5_000
  defp shutdown_of(spec), do: elem(Spec.child_info(spec), 2)

  # `pending`: pid => deadline of the children being stopped; `left`: how
  # many of them have not exited yet (each sends one EXIT).
  defp await_exits(_pending, 0, _deadlines, _recheck, timer) do
    cancel_timer(timer)
    :ok
  end

  defp await_exits(pending, left, deadlines, recheck, timer) do
    receive do
      {:EXIT, pid, _} when is_map_key(pending, pid) ->
        await_exits(pending, left - 1, deadlines, recheck, timer)

      {:timeout, ^timer, :synod_shutdown} ->
        overdue(pending, deadlines, recheck)
    end
  end

  # A deadline or the recheck is due: the children still alive stay
  # pending (one that unlinked itself is gone without an EXIT), and those
  # past their deadline are killed.
  defp overdue(pending, deadlines, recheck) do
    now = System.monotonic_time(:millisecond)
    pending = Map.filter(pending, fn {pid, _} -> alive?(pid) end)
    {due, later} = Enum.split_while(deadlines, &(&1 != :infinity and &1 <= now))

    pending =
      if due == [],
        do: pending,
        else:
          Map.new(pending, fn {pid, deadline} ->
            if deadline in due do
              Process.exit(pid, :kill)
              {pid, :infinity}
            else
              {pid, deadline}
            end
          end)

    recheck = if now >= recheck, do: now + @recheck, else: recheck
    await_exits(pending, map_size(pending), later, recheck, next_timer(later, recheck, now))
  end

  defp next_timer(deadlines, recheck, now) do
    at =
      case deadlines do
        [next | _] when next != :infinity -> min(next, recheck)
        _ -> recheck
      end

    :erlang.start_timer(max(at - now, 0), self(), :synod_shutdown)
  end

  defp cancel_timer(timer) do
    if :erlang.cancel_timer(timer) == false do
      receive do
        {:timeout, ^timer, :synod_shutdown} -> :ok
      after
        0 -> :ok
      end
    end

    :ok
  end

  defp alive?(pid) when node(pid) == node(), do: Process.alive?(pid)
  defp alive?(_pid), do: true
end
