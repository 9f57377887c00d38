defmodule Synod.Metrics do
  @moduledoc """
  Prometheus metrics fed by Synod's events.

  `start_link/1` (or `Synod.Observer`, which starts it) attaches one handler
  to every event of docs/observability.md's table. The handler runs in the
  process that emits the event and does one ETS update (`:ets.update_counter/4`
  on a public, write-concurrent table), so the emitter pays about a
  microsecond; the text is rendered only when someone scrapes.

  `render/0` returns the metrics in the Prometheus text exposition format
  (version 0.0.4): `# HELP` and `# TYPE` lines, counters ending in `_total`,
  gauges, and histograms with cumulative `_bucket{le="..."}` lines in
  increasing order ending with `le="+Inf"`, then `_sum` and `_count`.
  Durations are in seconds. Label values are escaped (`\\`, `"`, newline).

      {:ok, _} = Synod.Metrics.start_link([])
      Synod.Metrics.render() |> IO.puts()

  Each node counts its own: a hub start or stop only on the node it
  happened on (every member reports those it learns of, with that node in
  the metadata), an election change only on the candidate that won. Sum the
  nodes' scrapes for the cluster.

  Labels are only those of bounded sets (group, store, hub, node, kind,
  role, result, queue, election, task states); never keys or child ids.

  The last leader changes (`recent_leader_changes/0`) are kept too, for the
  status page.
  """

  use GenServer

  alias Synod.Telemetry

  @table __MODULE__
  @handler {__MODULE__, :handler}
  @recent 20

  # Seconds: 50 µs .. 10 s.
  @time_buckets [
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0
  ]

  # name => {type, help, label names}
  @metrics %{
    synod_hub_children_started_total:
      {:counter, "Children started on this node by the hub (each node counts its own).",
       [:hub, :node]},
    synod_hub_children_stopped_total:
      {:counter, "Children stopped on this node by the hub (each node counts its own).",
       [:hub, :node]},
    synod_hub_children_migrated_total:
      {:counter, "Children moved from one node to another.", [:hub, :from, :to]},
    synod_hub_redistribution_duration_seconds:
      {:histogram, "Time a redistribution took.", [:hub, :node, :reason]},
    synod_hub_redistribution_moved_total:
      {:counter, "Children moved by redistributions.", [:hub, :node, :reason]},
    synod_hub_partitioned:
      {:gauge, "1 when this node's side of the hub is partitioned, else 0.", [:hub, :node]},
    synod_hub_members:
      {:gauge, "Members the hub sees at its last partition event.", [:hub, :node]},
    synod_raft_role_changes_total:
      {:counter, "Role changes of this node's member, by the new role.", [:group, :node, :role]},
    synod_raft_leader_changes_total:
      {:counter, "Leader changes seen by this node's member.", [:group, :node]},
    synod_raft_term: {:gauge, "The member's current term.", [:group, :node]},
    synod_raft_is_leader: {:gauge, "1 when this node's member leads the group.", [:group, :node]},
    synod_raft_commit_latency_seconds:
      {:histogram, "From proposal to apply, oldest proposal of a batch, on the leader.",
       [:group, :node]},
    synod_raft_committed_entries_total:
      {:counter, "Entries applied in batches holding this member's proposals.", [:group, :node]},
    synod_raft_fsync_duration_seconds: {:histogram, "Log writes with fsync.", [:group, :node]},
    synod_raft_fsync_bytes_total: {:counter, "Bytes written by log fsyncs.", [:group, :node]},
    synod_raft_snapshots_sent_total: {:counter, "Snapshots sent to followers.", [:group, :node]},
    synod_raft_snapshot_sent_bytes_total: {:counter, "Bytes of snapshots sent.", [:group, :node]},
    synod_raft_snapshots_installed_total:
      {:counter, "Snapshots received and installed.", [:group, :node]},
    synod_store_request_duration_seconds:
      {:histogram, "Store requests made from this node, by kind and result.",
       [:store, :kind, :result]},
    synod_store_watch_lag_events:
      {:gauge, "Events the store's watches on this node are behind by.", [:store, :node]},
    synod_lock_wait_seconds: {:histogram, "Time to acquire a lock.", [:store]},
    synod_lock_hold_seconds: {:histogram, "Time a lock was held, by result.", [:store, :result]},
    synod_election_leader_changes_total:
      {:counter, "Elections won by candidates on this node.", [:store, :election]},
    synod_queue_depth: {:gauge, "Values waiting in a queue.", [:store, :queue]},
    synod_tasks_transitions_total:
      {:counter, "Task state transitions, by from and to.", [:store, :from, :to]},
    synod_cnode_connected: {:gauge, "1 while the C node is connected.", [:node]},
    synod_cnode_requests_total:
      {:counter, "Requests sent to the C node, counted by items (children).", [:node, :kind]}
  }

  @events [
    [:synod, :hub, :children, :started],
    [:synod, :hub, :children, :stopped],
    [:synod, :hub, :children, :migrated],
    [:synod, :hub, :redistribution, :stop],
    [:synod, :hub, :partition],
    [:synod, :raft, :role],
    [:synod, :raft, :leader],
    [:synod, :raft, :commit],
    [:synod, :raft, :fsync],
    [:synod, :raft, :snapshot, :sent],
    [:synod, :raft, :snapshot, :installed],
    [:synod, :store, :request],
    [:synod, :store, :watch, :lag],
    [:synod, :lock, :acquired],
    [:synod, :lock, :released],
    [:synod, :election, :leader],
    [:synod, :queue, :depth],
    [:synod, :tasks, :transition],
    [:synod, :cnode, :connection],
    [:synod, :cnode, :request]
  ]

  @doc "The events the metrics are fed by."
  @spec events() :: [Telemetry.event()]
  def events, do: @events

  @doc "The metrics: name => `{type, help, label names}`."
  @spec definitions() :: %{atom() => {:counter | :gauge | :histogram, String.t(), [atom()]}}
  def definitions, do: @metrics

  @doc "The histogram buckets' upper bounds, in seconds (then `+Inf`)."
  @spec buckets() :: [float()]
  def buckets, do: @time_buckets

  @doc false
  def child_spec(opts),
    do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}}

  @doc """
  Creates the table and attaches the handler. Takes no options (`[]`).
  Returns `{:error, {:already_started, pid}}` if running.
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    Synod.Coord.Options.validate!(opts, [])
    GenServer.start_link(__MODULE__, nil, name: __MODULE__)
  end

  @doc "Whether the metrics are being collected."
  @spec running?() :: boolean()
  def running?, do: :ets.whereis(@table) != :undefined

  @doc "Forgets every value (the metrics stay attached)."
  @spec reset() :: :ok
  def reset do
    if running?(), do: :ets.delete_all_objects(@table)
    :ok
  end

  # -- the handler: runs in the emitting process ---------------------------------------

  @doc false
  def handle_event(event, m, md, _config), do: record(event, m, md)

  # Every member emits the starts and stops it learns of, with `node` the
  # node whose children changed (docs/hub.md, "Events"): each node counts
  # only its own, so that summing the nodes' scrapes counts each once.
  defp record([:synod, :hub, :children, :started], %{count: n}, %{node: node} = md)
       when node == node(),
       do: count(:synod_hub_children_started_total, [md[:hub], node], n)

  defp record([:synod, :hub, :children, :stopped], %{count: n}, %{node: node} = md)
       when node == node(),
       do: count(:synod_hub_children_stopped_total, [md[:hub], node], n)

  defp record([:synod, :hub, :children, :migrated], %{count: n}, md),
    do: count(:synod_hub_children_migrated_total, [md[:hub], md[:from], md[:to]], n)

  defp record([:synod, :hub, :redistribution, :stop], m, md) do
    labels = [md[:hub], md[:node], reason_kind(md[:reason])]
    observe(:synod_hub_redistribution_duration_seconds, labels, m[:duration])
    count(:synod_hub_redistribution_moved_total, labels, m[:moved] || 0)
  end

  defp record([:synod, :hub, :partition], m, md) do
    labels = [md[:hub], md[:node]]
    gauge(:synod_hub_partitioned, labels, if(md[:state] == :partitioned, do: 1, else: 0))
    gauge(:synod_hub_members, labels, m[:members] || 0)
  end

  defp record([:synod, :raft, :role], m, md) do
    count(:synod_raft_role_changes_total, [md[:group], md[:node], md[:role]], 1)
    gauge(:synod_raft_term, [md[:group], md[:node]], m[:term] || 0)

    gauge(
      :synod_raft_is_leader,
      [md[:group], md[:node]],
      if(md[:role] == :leader, do: 1, else: 0)
    )
  end

  defp record([:synod, :raft, :leader], m, md) do
    count(:synod_raft_leader_changes_total, [md[:group], md[:node]], 1)
    gauge(:synod_raft_term, [md[:group], md[:node]], m[:term] || 0)
    remember_leader(md[:group], md[:node], md[:leader], md[:previous], m[:term])
  end

  defp record([:synod, :raft, :commit], m, md) do
    observe(:synod_raft_commit_latency_seconds, [md[:group], md[:node]], m[:latency])
    count(:synod_raft_committed_entries_total, [md[:group], md[:node]], m[:entries] || 0)
  end

  defp record([:synod, :raft, :fsync], m, md) do
    observe(:synod_raft_fsync_duration_seconds, [md[:group], md[:node]], m[:duration])
    count(:synod_raft_fsync_bytes_total, [md[:group], md[:node]], m[:bytes] || 0)
  end

  defp record([:synod, :raft, :snapshot, :sent], m, md) do
    count(:synod_raft_snapshots_sent_total, [md[:group], md[:node]], 1)
    count(:synod_raft_snapshot_sent_bytes_total, [md[:group], md[:node]], m[:bytes] || 0)
  end

  defp record([:synod, :raft, :snapshot, :installed], _m, md),
    do: count(:synod_raft_snapshots_installed_total, [md[:group], md[:node]], 1)

  defp record([:synod, :store, :request], m, md),
    do:
      observe(
        :synod_store_request_duration_seconds,
        [md[:store], md[:kind], md[:result]],
        m[:duration]
      )

  defp record([:synod, :store, :watch, :lag], m, md),
    do: gauge(:synod_store_watch_lag_events, [md[:store], md[:node]], m[:events] || 0)

  defp record([:synod, :lock, :acquired], m, md),
    do: observe(:synod_lock_wait_seconds, [md[:store]], m[:wait])

  defp record([:synod, :lock, :released], m, md),
    do: observe(:synod_lock_hold_seconds, [md[:store], md[:result]], m[:hold])

  # Each candidate reports its own changes: elected (leader: its id,
  # previous: nil) or deposed (leader: nil, previous: its id). A change of
  # leader is counted once, by the candidate that won; both are remembered.
  defp record([:synod, :election, :leader], _m, md) do
    if md[:leader] != nil,
      do: count(:synod_election_leader_changes_total, [md[:store], md[:election]], 1)

    remember(:recent_election, %{
      store: md[:store],
      election: md[:election],
      node: node(),
      leader: md[:leader],
      previous: md[:previous]
    })
  end

  defp record([:synod, :queue, :depth], m, md),
    do: gauge(:synod_queue_depth, [md[:store], md[:queue]], m[:depth] || 0)

  # `from: nil` is a task created: "none" (an empty label value would read
  # as no label at all).
  defp record([:synod, :tasks, :transition], _m, md),
    do: count(:synod_tasks_transitions_total, [md[:store], md[:from] || :none, md[:to]], 1)

  defp record([:synod, :cnode, :connection], _m, md),
    do: gauge(:synod_cnode_connected, [md[:node]], if(md[:state] == :up, do: 1, else: 0))

  defp record([:synod, :cnode, :request], m, md),
    do: count(:synod_cnode_requests_total, [md[:node], md[:kind]], m[:count] || 1)

  defp record(_event, _m, _md), do: :ok

  # A redistribution's reason as a label of a bounded set: its kind
  # (`{:joined, node}` -> joined, `{:left, nodes}` -> left, `:healed`, ...).
  defp reason_kind({kind, _}) when is_atom(kind), do: kind
  defp reason_kind(kind) when is_atom(kind), do: kind
  defp reason_kind(_), do: :other

  # A counter row: {{name, labels}, value}; a gauge row the same, replaced;
  # a histogram row: {{name, labels}, count, sum_native, bucket_1 .. bucket_n,
  # bucket_inf} with per-bucket (not cumulative) counts.
  defp count(name, labels, n) when is_integer(n) and n >= 0 do
    :ets.update_counter(@table, {name, List.to_tuple(labels)}, n, {{name, nil}, 0})
    :ok
  end

  defp count(_name, _labels, _n), do: :ok

  defp gauge(name, labels, v) when is_number(v) do
    :ets.insert(@table, {{name, List.to_tuple(labels)}, v})
    :ok
  end

  defp gauge(_name, _labels, _v), do: :ok

  @native_per_second System.convert_time_unit(1, :second, :native)
  @bounds Enum.map(@time_buckets, &round(&1 * System.convert_time_unit(1, :second, :native)))
  @width length(@time_buckets) + 3
  @default List.to_tuple([nil | List.duplicate(0, @width)])

  defp observe(name, labels, native) when is_integer(native) do
    native = max(native, 0)
    pos = bucket(@bounds, native, 4)

    :ets.update_counter(
      @table,
      {name, List.to_tuple(labels)},
      [{2, 1}, {3, native}, {pos, 1}],
      put_elem(@default, 0, {name, nil})
    )

    :ok
  end

  defp observe(_name, _labels, _v), do: :ok

  defp bucket([bound | _], v, pos) when v <= bound, do: pos
  defp bucket([_ | rest], v, pos), do: bucket(rest, v, pos + 1)
  defp bucket([], _v, pos), do: pos

  defp remember_leader(group, node, leader, previous, term),
    do:
      remember(:recent, %{
        group: group,
        node: node,
        leader: leader,
        previous: previous,
        term: term
      })

  defp remember(kind, change) do
    seq = :ets.update_counter(@table, {:seq, kind}, 1, {{:seq, kind}, 0})
    :ets.insert(@table, {{kind, seq}, Map.put(change, :at, System.system_time(:millisecond))})
    :ets.delete(@table, {kind, seq - @recent})
    :ok
  end

  @doc "The last #{@recent} Raft leader changes seen on this node, newest first."
  @spec recent_leader_changes() :: [map()]
  def recent_leader_changes, do: recent(:recent)

  @doc """
  The last #{@recent} election changes of this node's candidates, newest
  first: `%{store, election, node, leader, previous, at}` (`leader: nil`: a
  candidate stepped down, `previous: nil`: one was elected).
  """
  @spec recent_election_changes() :: [map()]
  def recent_election_changes, do: recent(:recent_election)

  defp recent(kind) do
    if running?() do
      :ets.match_object(@table, {{kind, :_}, :_})
      |> Enum.map(fn {{^kind, seq}, change} -> {seq, change} end)
      |> Enum.sort(:desc)
      |> Enum.map(&elem(&1, 1))
    else
      []
    end
  end

  # -- rendering ---------------------------------------------------------------------------

  @doc "Every metric in the Prometheus text exposition format (version 0.0.4)."
  @spec render() :: iodata()
  def render do
    rows = if running?(), do: :ets.tab2list(@table), else: []

    by_name =
      rows
      |> Enum.filter(&metric_row?/1)
      |> Enum.group_by(fn row -> elem(elem(row, 0), 0) end)

    up = [
      "# HELP synod_up 1 while Synod's metrics are collected on this node.\n",
      "# TYPE synod_up gauge\n",
      "synod_up{node=\"",
      escape(node()),
      "\"} 1\n"
    ]

    [
      up
      | for {name, {type, help, label_names}} <- Enum.sort(@metrics) do
          family(name, type, help, label_names, Enum.sort(Map.get(by_name, name, [])))
        end
    ]
  end

  defp metric_row?(row) do
    case elem(row, 0) do
      {name, labels} -> is_map_key(@metrics, name) and is_tuple(labels)
      _ -> false
    end
  end

  defp family(name, type, help, label_names, rows) do
    [
      "# HELP #{name} #{help}\n# TYPE #{name} #{type}\n"
      | Enum.map(rows, &sample(name, type, label_names, &1))
    ]
  end

  defp sample(name, :histogram, label_names, row) do
    [{^name, labels}, count, sum | buckets] = Tuple.to_list(row)
    pairs = Enum.zip(label_names, Tuple.to_list(labels))

    {lines, _} =
      Enum.map_reduce(Enum.zip(@time_buckets ++ [:inf], buckets), 0, fn {le, n}, acc ->
        acc = acc + n
        le = if le == :inf, do: "+Inf", else: float(le)

        {[
           to_string(name),
           "_bucket",
           labels(pairs ++ [{:le, le}]),
           " ",
           Integer.to_string(acc),
           "\n"
         ], acc}
      end)

    [
      lines,
      [to_string(name), "_sum", labels(pairs), " ", float(sum / @native_per_second), "\n"],
      [to_string(name), "_count", labels(pairs), " ", Integer.to_string(count), "\n"]
    ]
  end

  defp sample(name, _type, label_names, {{name, labels}, value}) do
    [
      to_string(name),
      labels(Enum.zip(label_names, Tuple.to_list(labels))),
      " ",
      number(value),
      "\n"
    ]
  end

  defp labels([]), do: ""

  defp labels(pairs) do
    [
      "{",
      Enum.map_intersperse(pairs, ",", fn {k, v} -> [to_string(k), "=\"", escape(v), "\""] end),
      "}"
    ]
  end

  @doc "A label value escaped as the text format wants (backslash, double quote, newline)."
  @spec escape(term()) :: String.t()
  def escape(nil), do: ""
  def escape(v) when is_binary(v), do: do_escape(v)
  def escape(v) when is_atom(v), do: do_escape(Atom.to_string(v))
  def escape(v), do: do_escape(if(is_number(v), do: to_string(v), else: inspect(v)))

  defp do_escape(s) do
    s
    |> String.replace("\\", "\\\\")
    |> String.replace("\"", "\\\"")
    |> String.replace("\n", "\\n")
  end

  defp number(v) when is_integer(v), do: Integer.to_string(v)
  defp number(v) when is_float(v), do: float(v)

  defp float(v), do: :erlang.float_to_binary(v / 1, [:short])

  # -- the process: owns the table --------------------------------------------------------

  @impl true
  def init(nil) do
    Process.flag(:trap_exit, true)

    :ets.new(@table, [
      :set,
      :named_table,
      :public,
      write_concurrency: true,
      read_concurrency: true
    ])

    _ = Telemetry.detach(@handler)
    :ok = Telemetry.attach_many(@handler, @events, &__MODULE__.handle_event/4, nil)
    {:ok, nil}
  end

  @impl true
  def handle_call(request, _from, state), do: {:reply, {:error, {:bad_request, request}}, state}

  @impl true
  def handle_cast(_msg, state), do: {:noreply, state}

  @impl true
  def handle_info(_msg, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, _state) do
    _ = Telemetry.detach(@handler)
    :ok
  end
end
