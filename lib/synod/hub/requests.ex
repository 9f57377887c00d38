defmodule Synod.Hub.Requests do
  @moduledoc false
  # Pure: what a start or stop request, a peer's tombstones and a peer's
  # full picture (`synod_sync`) mean, as effects for the coordinator to
  # perform (docs/hub.md, "Structure"). Starting and stopping local
  # children needs their pids, so those are two steps: a first decision
  # says whether to run them at all (or which), the coordinator runs them
  # through the children's supervisor, and a second decision, given what
  # happened, returns the rest (replies, broadcasts, events, rows to
  # reconcile, tombstones to record). No I/O, no messages, no clock.
  #
  # The effects (besides those of Synod.Hub.Membership and Migrations):
  #
  #   * `{:reply, request, results, changes, kind}` — answer the request's
  #     respondents (`request` = `{ref, reply_to, opts}`) with `results`,
  #     along with the announcement of `changes` (`kind`: :registered,
  #     :unregistered, `{:unregistered, why}`, or `{:stopped, t}`: a stop
  #     request's `synod_stopped`, `changes` the ids it stopped);
  #   * `{:put_stop, ids, t}` — record a stop request's tombstone `{id, t}`
  #     of each id (`Tombstones.record_stop/5`);
  #   * `{:put_stop_ids, ids, t, stopped}` — record a peer's stop request's
  #     tombstones (`Tombstones.record_ids/6`; `stopped` as below);
  #   * `{:started_event, node, entries}` — `:children_started` for them;
  #   * `{:reconcile_rows, rows}` — decide these rows again;
  #   * `{:put_tombstones, [{id, t}], stopped}` — record stops
  #     (`stopped`: `%{id => pid | nil}`, as in Tombstones.record/4);
  #   * `{:delete_rows, ids}` — delete these registry rows;
  #   * `{:announce_stopped, stopped, reason}` — `synod_unregistered` to
  #     every peer;
  #   * `:send_orphans`, `:synced`, `{:broadcast, msg}`, `{:event, id, data}`.

  alias Synod.Hub.{Registry, Tombstones}

  @typedoc "`{ref, reply_to, opts}` of a `synod_start` or `synod_stop`."
  @type request :: {reference(), [pid()], keyword()}

  @doc """
  A start request: `{:refuse, results, effects}` (a partitioned side
  answers `{:error, :partitioned}` for every child) or `{:start, kind}`
  (start them locally as `kind`: `:member` for a member's move, which
  keeps the entry's incarnation, else `:client`).
  """
  @spec start(boolean(), request(), [tuple()]) ::
          {:refuse, list(), list()} | {:start, :client | :member}
  def start(true = _partitioned, request, entries) do
    results = for {id, _, _, _} <- entries, do: {id, {:error, :partitioned}}
    {:refuse, results, [{:reply, request, results, [], :registered}]}
  end

  def start(false, {_, _, opts}, _entries),
    do: {:start, if(:proplists.get_bool(:migration, opts), do: :member, else: :client)}

  @doc """
  The local starts of a request are done (`results` in order, `rows` as
  now stored, `started` the new copies' entries): answer with the
  announcement, tell subscribers, and reconcile the rows (a requester
  with a stale ring may have sent children this node does not own).
  """
  @spec started(request(), node(), list(), list(), list()) :: list()
  def started(request, me, results, rows, started),
    do: [
      {:reply, request, start_answer(request, results), started, :registered},
      {:started_event, me, started},
      {:reconcile_rows, rows}
    ]

  @doc """
  The local starts of `entries` on `me`, given what the shell read: `rows`
  (the row of each entry's id or nil, in the entries' order), `stamps`
  (`%{id => t}`, the latest stop of each id) and the clock's tick `now`.
  Returns `{plan, newest}`: a `Registry.start_step/6` per entry, in order,
  and the highest incarnation the entries carry (the clock observes it).
  The shell starts the plan's `{:start, ...}` steps in one supervisor call
  and gives the answers to `merge_starts/2`.
  """
  @spec plan_starts(:client | :member, list(), list(), map(), node(), integer()) ::
          {list(), non_neg_integer()}
  def plan_starts(kind, entries, rows, stamps, me, now),
    do: plan_starts(kind, entries, rows, stamps, me, now, [], 0)

  defp plan_starts(
         kind,
         [{id, _, slot, _} = entry | entries],
         [row | rows],
         stamps,
         me,
         now,
         plan,
         newest
       ) do
    step = Registry.start_step(kind, entry, row, me, Map.get(stamps, id), now)

    plan_starts(
      kind,
      entries,
      rows,
      stamps,
      me,
      now,
      [step | plan],
      max(newest, Registry.inc(slot))
    )
  end

  defp plan_starts(_kind, [], [], _stamps, _me, _now, plan, newest),
    do: {Enum.reverse(plan), newest}

  @doc "The `{id, spec}` to start for a plan of `plan_starts/6`, in order."
  @spec to_start(list()) :: [{term(), term()}]
  def to_start(plan), do: for({:start, id, spec, _, _, _} <- plan, do: {id, spec})

  @doc """
  The supervisor answered the starts of `plan` (`answers`: `[{id, {:ok,
  pid} | {:error, reason}}]`, in the plan's order): `{results, rows,
  started, modes}` — an answer per entry in order (a copy already running
  here answers with its pid, a stopped move `{:error, :stopped}`), the
  rows to store, the new copies' entries `{id, spec, slot, pid}`, and the
  `{pid, mode}` each new copy is told.
  """
  @spec merge_starts(list(), list()) :: {list(), list(), list(), list()}
  def merge_starts(plan, answers), do: merge_starts(plan, answers, [], [], [], [])

  defp merge_starts([{:running, id, pid} | plan], answers, results, rows, started, modes),
    do: merge_starts(plan, answers, [{id, {:ok, pid}} | results], rows, started, modes)

  defp merge_starts([{:stopped, id} | plan], answers, results, rows, started, modes),
    do: merge_starts(plan, answers, [{id, {:error, :stopped}} | results], rows, started, modes)

  defp merge_starts(
         [{:start, id, spec, meta, mode, others} | plan],
         [{id, answer} | answers],
         results,
         rows,
         started,
         modes
       ) do
    case answer do
      {:ok, pid} ->
        merge_starts(
          plan,
          answers,
          [{id, answer} | results],
          [{id, spec, meta, [pid | others]} | rows],
          [{id, spec, meta, pid} | started],
          [{pid, mode} | modes]
        )

      {:error, _} ->
        merge_starts(plan, answers, [{id, answer} | results], rows, started, modes)
    end
  end

  defp merge_starts([], [], results, rows, started, modes),
    do: {Enum.reverse(results), Enum.reverse(rows), Enum.reverse(started), Enum.reverse(modes)}

  @doc """
  The local stops of `ids` on `me`, given their rows as the shell read
  them (the row of each id or nil, in the ids' order): a
  `Registry.stop_step/3` per id, in order. The shell stops the plan's
  copies (`to_stop/1`) in one supervisor call.
  """
  @spec plan_stops([term()], list(), node()) :: list()
  def plan_stops(ids, rows, me),
    do: Enum.zip_with(ids, rows, &Registry.stop_step(&1, &2, me))

  @doc "The ids whose local copy a plan of `plan_stops/3` stops, in order."
  @spec to_stop(list()) :: [term()]
  def to_stop(plan), do: for({:stop, id, _, _, _, _} <- plan, do: id)

  @doc """
  The copies of `plan` are stopped for `reason`: `{results, stopped, puts,
  deletes}` — an answer per id in order (`{:error, :not_found}` for no
  copy here), the copies stopped `{id, pid}`, the rows to store (those
  `Registry.keep_row?/2` keeps, without the copy) and the ids whose row
  goes.
  """
  @spec merge_stops(list(), term()) :: {list(), list(), list(), list()}
  def merge_stops(plan, reason) do
    {results, {stopped, puts, deletes}} =
      Enum.map_reduce(plan, {[], [], []}, fn
        {:absent, id}, acc ->
          {{id, {:error, :not_found}}, acc}

        {:stop, id, spec, meta, pid, rest}, {stopped, puts, deletes} ->
          acc =
            if Registry.keep_row?(reason, rest),
              do: {[{id, pid} | stopped], [{id, spec, meta, rest} | puts], deletes},
              else: {[{id, pid} | stopped], puts, [id | deletes]}

          {{id, {:ok, pid}}, acc}
      end)

    {results, Enum.reverse(stopped), Enum.reverse(puts), Enum.reverse(deletes)}
  end

  @doc """
  A stop request: `{:refuse, results, effects}` on a partitioned side
  (under `:majority` a minority refuses stops as it refuses starts), or
  `:stop` (stop the local copies, stamped with a new tick).
  """
  @spec stop(boolean(), request(), [term()]) :: {:refuse, list(), list()} | :stop
  def stop(true = _partitioned, request, ids) do
    results = for id <- ids, do: {id, {:error, :partitioned}}
    {:refuse, results, [{:reply, request, results, [], :unregistered}]}
  end

  def stop(false, _request, _ids), do: :stop

  @doc """
  The local stops of a request stamped `t` are done (`results` in order,
  a copy stopped a moment ago by another member's tombstone counted as
  stopped; `stopped` the copies stopped here). A tombstone per id, before
  anything goes out (ids with no copy here too, in case a copy is on its
  way: their rows go, and every peer hears of them); then the answers
  with the announcement, and the event.
  """
  @spec stopped(request(), node(), [term()], integer(), list(), list()) :: list()
  def stopped(request, me, ids, t, results, stopped) do
    absent = for {id, {:error, :not_found}} <- results, do: {id, t}

    tell_absent =
      if absent == [],
        do: [],
        else: [
          {:delete_rows, Enum.map(absent, &elem(&1, 0))},
          {:broadcast, {:synod_tombstones, me, absent}}
        ]

    [{:put_stop, ids, t}] ++
      tell_absent ++
      [
        {:reply, request, stop_answer(request, results), for({id, _} <- stopped, do: id),
         {:stopped, t}}
      ] ++
      stopped_event(me, stopped)
  end

  @doc """
  The answer a stop request's respondents get for `results` (in the
  request's order): `results` as they are, or, when the request asked for
  it (`{:answers, :pids}` in its options, as Synod's callers do) and every
  id was stopped, `{:stopped, pids}`: the pids in the request's order,
  without the ids the caller already has (an answer a fraction of the
  size to send, decode and pass on).
  """
  @spec stop_answer(request(), list()) :: list() | {:stopped, [pid()]}
  def stop_answer(request, results), do: compact_answer(request, results, :stopped)

  @doc """
  The answer a start request's respondents get for `results` (in the
  request's order), as `stop_answer/2` has it: `{:started, pids}` when the
  request asked for `{:answers, :pids}` and every entry answered with a
  pid (started here now, or already running here), else `results`.
  """
  @spec start_answer(request(), list()) :: list() | {:started, [pid()]}
  def start_answer(request, results), do: compact_answer(request, results, :started)

  defp compact_answer({_ref, _reply_to, opts}, results, tag) do
    if :proplists.get_value(:answers, opts) == :pids,
      do: compact(results, results, tag, []),
      else: results
  end

  defp compact(results, [{_id, {:ok, pid}} | rest], tag, pids),
    do: compact(results, rest, tag, [pid | pids])

  defp compact(_results, [], tag, pids), do: {tag, :lists.reverse(pids)}
  defp compact(results, _other, _tag, _pids), do: results

  @doc """
  The local stops of a request stamped `t` are done (`results` in order,
  `stopped` the copies stopped here), given the tombstones the shell read
  for the ids it found no copy of (`tombs`, as in `raced/4`) at monotonic
  time `now` (ms): `{results, effects}` — the answers, a copy that another
  member's tombstone stopped here less than 5 s ago
  (`Tombstones.copy_window/0`) counted as stopped by this request
  (`raced/4`), and the effects of `stopped/6`.
  """
  @spec answer_stop(request(), node(), [term()], integer(), {list(), list()}, map(), integer()) ::
          {list(), list()}
  def answer_stop(request, me, ids, t, {results, stopped}, tombs, now) do
    results = raced(results, tombs, now, Tombstones.copy_window())
    {results, stopped(request, me, ids, t, results, stopped)}
  end

  @doc """
  A stop's answers, given the tombstones the shell read for the ids it
  found no copy of (`tombs`: `%{id => {t, recorded_at_ms, copy}}`, `copy`
  nil or `{pid, stopped_at_ms}`, as `Tombstones.lookup/2` has them) and
  the monotonic time `now` (ms): a copy that another member's tombstone
  stopped here less than `window` ms ago counts as stopped by this request
  (the request and the tombstone raced; the other copies' stops travel
  faster), answered with its pid. The copy's own time decides, not the
  tombstone's: a later tombstone of the id (which moves
  `recorded_at_ms`) does not make an old copy's stop a recent one.
  """
  @spec raced(list(), map(), integer(), non_neg_integer()) :: list()
  def raced(results, tombs, _now, _window) when tombs == %{}, do: results

  def raced(results, tombs, now, window) do
    Enum.map(results, fn
      {id, {:error, :not_found}} = result ->
        case tombs do
          %{^id => {_t, _at, {pid, at}}} when is_pid(pid) and now - at < window ->
            {id, {:ok, pid}}

          _ ->
            result
        end

      result ->
        result
    end)
  end

  @doc """
  Tombstones from a peer, each with this node's row of its id (`rows`:
  `[{t, row}]`, the ids without a row left out): `{covered, doomed}`, the
  ids whose row's incarnation a tombstone covers (their rows go) and,
  among them, those with a copy here (to stop).
  """
  @spec covered([{integer(), tuple()}], node()) :: {[term()], [term()]}
  def covered(rows, me), do: covered(rows, me, [], [])

  defp covered([{t, {id, _, slot, pids}} | rows], me, covered, doomed) do
    cond do
      not Tombstones.covers?(t, Registry.inc(slot)) -> covered(rows, me, covered, doomed)
      Registry.local_pid(pids, me) == nil -> covered(rows, me, [id | covered], doomed)
      true -> covered(rows, me, [id | covered], [id | doomed])
    end
  end

  defp covered([], _me, covered, doomed), do: {Enum.reverse(covered), Enum.reverse(doomed)}

  @doc """
  The covered copies here are stopped (`stopped`): record the tombstones
  (with the pids they stopped), drop the covered rows, announce the stops.
  """
  @spec tombstones_applied(node(), list(), [term()], list()) :: list()
  def tombstones_applied(me, tombstones, covered, stopped),
    do:
      [
        {:put_tombstones, tombstones, Map.new(stopped)},
        {:delete_rows, covered},
        {:announce_stopped, stopped, :stopped}
      ] ++ stopped_event(me, stopped)

  @doc """
  A peer's stop request stamped `t` of `ids` is applied here: the covered
  copies here are stopped (`stopped`). Record a tombstone per id (with the
  pids they stopped), drop the covered rows, announce the stops.
  """
  @spec stops_applied(node(), [term()], integer(), [term()], list()) :: list()
  def stops_applied(me, ids, t, covered, stopped),
    do:
      [{:put_stop_ids, ids, t, Map.new(stopped)}] ++
        if(covered == [], do: [], else: [{:delete_rows, covered}]) ++
        if(stopped == [], do: [], else: [{:announce_stopped, stopped, :stopped}]) ++
        stopped_event(me, stopped)

  @doc """
  A peer `from`'s full picture was compared with the rows and stored:
  `stale` the rows that named a copy `from` no longer runs (stored
  without it), `rows` the copies it runs as now stored, `added` the rows
  without a copy it told of that were missing, `known` the ids whose copy
  there this node knew already. Subscribers hear of the new copies; every
  changed row is reconciled; rows left without any copy go to their
  owners; a healing side is healed.
  """
  @spec synced(node(), list(), list(), list(), list(), [term()]) :: list()
  def synced(from, entries, stale, rows, added, known) do
    known = Map.from_keys(known, true)

    [
      {:started_event, from, Enum.reject(entries, &is_map_key(known, elem(&1, 0)))},
      {:reconcile_rows, stale ++ rows ++ added}
    ] ++
      if(Enum.any?(stale, &(elem(&1, 3) == [])), do: [:send_orphans], else: []) ++
      [:synced]
  end

  defp stopped_event(_me, []), do: []
  defp stopped_event(me, stopped), do: [{:event, :children_stopped, {me, stopped}}]
end
