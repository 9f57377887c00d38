defmodule Synod.Hub.Announcements do
  @moduledoc false
  # Pure: what a peer's announcements mean (`synod_registered`,
  # `synod_unregistered`, `synod_orphans`, `synod_tombstones`, `synod_sync`),
  # as effects for the coordinator to perform (docs/hub.md, "Structure").
  # The shell reads what a decision needs (whether the sender is a peer,
  # the tombstones of the ids) and passes it in; writing the rows is an
  # effect whose result (the rows as now stored) the shell feeds back into
  # the second step here, as Synod.Hub.Requests does for local starts and
  # stops. No I/O, no messages, no clock.
  #
  # The effects (besides those of Synod.Hub.Requests):
  #
  #   * `{:put_copies, from, entries, replies}` — record each entry's copy in
  #     its row (`Table.put_pids/2`), then `copies_put/4` with the rows;
  #   * `{:remove_copies, from, stopped, reason, replies}` — take each copy
  #     out of its row (`Table.remove_pid/4`), then `copies_removed/5`;
  #   * `{:add_orphans, orphans}` — add the rows without a copy that are
  #     missing (`Table.add_orphans/2`), then `orphans_added/1`;
  #   * `{:apply_tombstones, [{id, t}]}` — a peer's stops, applied here
  #     (`Requests.covered/2`, `Requests.tombstones_applied/4`);
  #   * `{:compare_sync, from, entries, orphans}` — compare a peer's full
  #     picture with the rows and store it, then `Requests.synced/6`;
  #   * `{:remove_stopped, from, t, ids, replies}` — a peer's stop request:
  #     take the copies on `from` of `ids` out of their rows
  #     (`Table.remove_node_copies/3`), then `stops_removed/6`;
  #   * `{:apply_stop, ids, t, rows}` — a peer's stop request's tombstones,
  #     applied here to `rows`, the rows the ids still have
  #     (`Requests.covered/2`, `Requests.stops_applied/5`);
  #   * `{:deliver_replies, replies, from}` — answers that came inside an
  #     announcement, to their respondents on this node.

  alias Synod.Hub.{Registry, Tombstones}

  @typedoc "`[{ref, [pid], results}]`: answers carried by an announcement."
  @type replies :: [{reference(), [pid()], list()}]

  @doc """
  The entries, orphans or rows of `list` (each with its id first and its
  slot third) that no tombstone covers: `stamps` is `%{id => t}`, the
  latest stop of each id this node knows (the shell reads them).
  """
  @spec live(list(), map()) :: list()
  def live(list, stamps) when stamps == %{}, do: list

  def live(list, stamps) do
    Enum.reject(list, fn item ->
      Tombstones.covers?(Map.get(stamps, elem(item, 0)), Registry.inc(elem(item, 2)))
    end)
  end

  @doc """
  `synod_registered` from `from` (`peer?`: whether it is a peer now):
  the copies are recorded first, so that an answer it carries reaches a
  caller that already sees the child in its node's registry. From a node
  that is no peer, only the answers are delivered.
  """
  @spec registered(boolean(), node(), list(), replies()) :: list()
  def registered(true = _peer?, from, entries, replies),
    do: [{:put_copies, from, entries, replies}]

  def registered(false, from, _entries, replies), do: deliver(replies, from)

  @doc """
  The copies of a `synod_registered` are recorded (`rows` as now stored):
  the answers, the subscribers' event, and the rows decided again.
  """
  @spec copies_put(node(), list(), list(), replies()) :: list()
  def copies_put(from, entries, rows, replies),
    do: deliver(replies, from) ++ [{:started_event, from, entries}, {:reconcile_rows, rows}]

  @doc """
  `copies_put/4` with the replication factor `rf` known and `rows` either
  the rows as now stored or `:new`: every entry was a new row, its one
  copy the announced pid on `from`, another node. With one copy per child
  such a row is never this node's to change (`Placement.reconcile/4`:
  only the node running a child's one copy moves it), so none is decided
  again, and no row is built for it; with more copies the rows are built
  from the entries.
  """
  @spec copies_put(node(), list(), list() | :new, replies(), pos_integer()) :: list()
  def copies_put(from, entries, :new, replies, 1),
    do: deliver(replies, from) ++ [{:started_event, from, entries}]

  def copies_put(from, entries, :new, replies, _rf),
    do:
      copies_put(
        from,
        entries,
        for({id, spec, slot, pid} <- entries, do: {id, spec, slot, [pid]}),
        replies
      )

  def copies_put(from, entries, rows, replies, _rf), do: copies_put(from, entries, rows, replies)

  @doc """
  `synod_unregistered` from `from`: the copies leave their rows first;
  from a node that is no peer, only the answers are delivered.
  """
  @spec unregistered(boolean(), node(), list(), term(), replies()) :: list()
  def unregistered(true = _peer?, from, stopped, reason, replies),
    do: [{:remove_copies, from, stopped, reason, replies}]

  def unregistered(false, from, _stopped, _reason, replies), do: deliver(replies, from)

  @doc """
  The copies of a `synod_unregistered` left their rows (`rows`: the rows
  still stored). What follows depends on `reason`: a copy that exited
  (`:stopped`) takes its other copies along (no owner may restart it); a
  copy that moves or is suspended must run again somewhere (its row is
  decided again). Then the answers. (A stop request's change is
  `synod_stopped`, `stopped/5`.)
  """
  @spec copies_removed(node(), list(), term(), list(), replies()) :: list()
  def copies_removed(from, stopped, reason, rows, replies) do
    event = if stopped == [], do: [], else: [{:event, :children_stopped, {from, stopped}}]
    next = if reason == :stopped, do: [], else: [{:reconcile_rows, rows}]

    event ++ next ++ deliver(replies, from)
  end

  @doc """
  `synod_stopped` from `from`: a stop request stamped `t` that stopped
  the copies of `ids` there. From a peer, those copies leave their rows
  first; from a node that is no peer, only the answers are delivered.
  """
  @spec stopped(boolean(), node(), integer(), [term()], replies()) :: list()
  def stopped(true = _peer?, from, t, ids, replies),
    do: [{:remove_stopped, from, t, ids, replies}]

  def stopped(false, from, _t, _ids, replies), do: deliver(replies, from)

  @doc """
  The copies on `from` of a `synod_stopped` left their rows (`gone`:
  `[{id, pid}]`, the copies removed; `rows`: the rows the ids still have
  here): the subscribers' event, the stop applied here for good (a
  tombstone per id, which stops this node's copy of a row it covers),
  then the answers.
  """
  @spec stops_removed(node(), integer(), [term()], list(), list(), replies()) :: list()
  def stops_removed(from, t, ids, gone, rows, replies) do
    event = if gone == [], do: [], else: [{:event, :children_stopped, {from, gone}}]
    event ++ [{:apply_stop, ids, t, rows}] ++ deliver(replies, from)
  end

  @doc "`synod_orphans` from `from`: the missing rows are added (from a peer only)."
  @spec orphans(boolean(), list()) :: list()
  def orphans(true = _peer?, orphans), do: [{:add_orphans, orphans}]
  def orphans(false, _orphans), do: []

  @doc "The orphans' rows that were missing are added: each is decided again."
  @spec orphans_added(list()) :: list()
  def orphans_added(rows), do: [{:reconcile_rows, rows}]

  @doc "`synod_tombstones` from `from`: applied here (from a peer only)."
  @spec tombstones(boolean(), list()) :: list()
  def tombstones(true = _peer?, tombstones), do: apply_tombstones(tombstones)
  def tombstones(false, _tombstones), do: []

  @doc """
  `synod_sync` from `from`: its tombstones first (so the picture is
  compared without the copies they stop), then its picture (from a peer
  only).
  """
  @spec sync(boolean(), node(), list(), list(), list()) :: list()
  def sync(true = _peer?, from, entries, orphans, tombstones),
    do: apply_tombstones(tombstones) ++ [{:compare_sync, from, entries, orphans}]

  def sync(false, _from, _entries, _orphans, _tombstones), do: []

  @doc """
  A local child exited by itself (`row` its row, `old` the pid that
  exited): restarted as `new` (its row names the new pid, it is told its
  mode, every peer hears of it), or gone (`new` nil: the copy leaves its
  row, as for a `synod_unregistered` with reason `:stopped`).
  """
  @spec child_exited(node(), tuple(), pid(), pid() | nil, atom()) :: list()
  def child_exited(me, {id, spec, meta, _} = row, old, new, mode) when is_pid(new),
    do: [
      {:put_row, Registry.replace_pid(row, old, new)},
      {:tell_mode, new, mode},
      {:broadcast_registered, [{id, spec, meta, new}]},
      {:event, :children_started, {me, [{id, new}]}}
    ]

  def child_exited(me, {id, _, _, _}, old, nil, _mode),
    do: [
      {:remove_copy, id, old, :stopped},
      {:announce_stopped, [{id, old}], :stopped},
      {:event, :children_stopped, {me, [{id, old}]}}
    ]

  defp apply_tombstones([]), do: []
  defp apply_tombstones(tombstones), do: [{:apply_tombstones, tombstones}]

  defp deliver([], _from), do: []
  defp deliver(replies, from), do: [{:deliver_replies, replies, from}]
end
