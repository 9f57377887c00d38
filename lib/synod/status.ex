defmodule Synod.Status do
  @moduledoc """
  This node's view of Synod: `Synod.status/0`.

  Returns a map with

    * `:node` and `:time` (system time in ms)
    * `:hubs`: per hub running here, `members`, `children` per node (copies
      in this node's registry), `partitioned`, and `ring`: each member's
      share of the ring (the fraction of 4096 sample keys it owns)
    * `:groups`: per Raft group with a member here, its `role`, `leader`,
      `term`, `commit` and `applied` index, `log` (first and last index,
      entries, bytes of the log file), `snapshot_index`, `voters`, `learners`
    * `:stores`: per store with a member here, `revision`, `keys`, `bytes`
      (of its change history), `leases`, and `watchers` (count, how many
      are behind, `lag` in events)
    * `:cnodes`: each connected hidden node that answers as a C node, with
      its version and the nodes it is connected to
    * `:recent_leader_changes`: when `Synod.Metrics` runs, the last leader
      changes it saw, newest first
    * `:recent_election_changes`: when `Synod.Metrics` runs, the last
      changes of the elections this node's candidates run in (elected:
      `previous` nil; stepped down: `leader` nil), newest first

  Nothing here waits long: every part is asked in its own process with a
  bound (`timeout:`, default 1000 ms, for all of them together), and a part
  that does not answer in time, or fails, is `%{error: reason}` in place of
  its value; the rest is still there. Reads the hubs' ETS tables, the Raft
  members' and store watchers' `:status` calls and a stale (local) read of
  each store's state machine.
  """

  alias Synod.Coord.Options

  @schema [timeout: [type: :pos_integer, default: 1_000]]
  @ring_samples 4096

  @doc "This node's view of every hub, Raft group, store and C node (see the module doc)."
  @spec status(keyword()) :: map()
  def status(opts \\ []) do
    %{timeout: timeout} = Options.validate!(opts, @schema)
    deadline = System.monotonic_time(:millisecond) + timeout
    groups = groups()
    stores = Enum.filter(groups, &store?/1)
    hubs = hubs()

    parts =
      Enum.map(hubs, &{:hubs, &1, fn -> hub(&1) end}) ++
        Enum.map(groups, &{:groups, &1, fn -> group(&1, timeout) end}) ++
        Enum.map(stores, &{:stores, &1, fn -> store(&1, timeout) end}) ++
        [{:cnodes, :all, fn -> cnodes(timeout) end}]

    results = run(parts, deadline)

    pick = fn kind ->
      for {{^kind, name, _}, value} <- Enum.zip(parts, results), into: %{}, do: {name, value}
    end

    %{
      node: node(),
      time: System.system_time(:millisecond),
      hubs: pick.(:hubs),
      groups: pick.(:groups),
      stores: pick.(:stores),
      cnodes:
        case pick.(:cnodes) do
          %{all: list} when is_list(list) -> list
          %{all: error} -> error
        end,
      recent_leader_changes: Synod.Metrics.recent_leader_changes(),
      recent_election_changes: Synod.Metrics.recent_election_changes()
    }
  end

  # Every part in its own process (monitored, not linked), all awaited
  # until one deadline; a part still running then is killed.
  defp run(parts, deadline) do
    monitors =
      Enum.map(parts, fn {_, _, fun} ->
        spawn_monitor(fn -> exit({:synod_status, part(fun)}) end)
      end)

    Enum.map(monitors, fn {pid, ref} ->
      left = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {:DOWN, ^ref, :process, _, {:synod_status, value}} -> value
        {:DOWN, ^ref, :process, _, reason} -> %{error: inspect(reason)}
      after
        left ->
          Process.exit(pid, :kill)
          Process.demonitor(ref, [:flush])
          %{error: :timeout}
      end
    end)
  end

  defp part(fun) do
    fun.()
  catch
    kind, reason -> %{error: Exception.format_banner(kind, reason)}
  end

  # -- hubs ---------------------------------------------------------------------------

  defp hubs do
    for {{Synod.Hub, hub}, {_registry, meta}} <- :persistent_term.get(),
        :ets.info(meta, :id) != :undefined,
        do: hub
  end

  defp hub(hub) do
    {:ok, {registry, meta}} = Synod.Hub.Caller.tables(hub)
    members = Synod.Hub.Caller.meta_get(meta, :members)
    ring = Synod.Hub.Caller.meta_get(meta, :ring)

    children =
      :ets.foldl(
        fn row, acc ->
          Enum.reduce(Synod.Hub.Registry.copies(elem(row, 3)), acc, fn pid, acc ->
            Map.update(acc, node(pid), 1, &(&1 + 1))
          end)
        end,
        Map.new(members, &{&1, 0}),
        registry
      )

    %{
      members: members,
      children: children,
      partitioned: Synod.Hub.Caller.meta_get(meta, :partitioned),
      ring: shares(ring, members)
    }
  end

  defp shares(_ring, []), do: %{}

  defp shares(ring, members) do
    keys = for i <- 1..@ring_samples, do: "synod-status-sample-#{i}"
    counts = ring |> Synod.Ring.lookup_many(keys) |> Enum.frequencies()
    Map.new(members, &{&1, Map.get(counts, &1, 0) / @ring_samples})
  end

  # -- raft groups ---------------------------------------------------------------------

  defp groups do
    if :ets.whereis(Synod.Raft.Info) == :undefined,
      do: [],
      else: for({group, pid, _} <- :ets.tab2list(Synod.Raft.Info), Process.alive?(pid), do: group)
  end

  defp group(group, timeout) do
    st = GenServer.call(Synod.Raft.member_name(group), :status, timeout)

    %{
      role: st.role,
      leader: st.leader_node,
      term: st.term,
      commit: st.commit,
      applied: st.applied,
      voters: st.voter_nodes,
      learners: st.learner_nodes,
      snapshot_index: Map.get(st, :snapshot_index),
      log: %{
        first_index: st.first_index,
        last_index: st.last_index,
        entries: max(st.last_index - st.first_index + 1, 0),
        bytes: Map.get(st, :log_bytes)
      }
    }
  end

  # -- stores ---------------------------------------------------------------------------

  defp store?(group), do: Process.whereis(Synod.Store.Watcher.name(group)) != nil

  defp store(store, timeout) do
    {:ok, info} =
      Synod.Raft.query(store, {Synod.Store.Machine, :info, []},
        consistency: :stale,
        timeout: timeout
      )

    watchers =
      try do
        GenServer.call(Synod.Store.Watcher.name(store), :status, timeout)
      catch
        :exit, reason -> %{error: inspect(reason)}
      end

    %{
      revision: info.revision,
      compact_revision: info.compact_revision,
      keys: info.keys,
      leases: info.leases,
      bytes: info.history_bytes,
      events: info.events,
      watchers: watchers
    }
  end

  # -- C nodes ----------------------------------------------------------------------------

  defp cnodes(timeout) do
    Node.list(:hidden)
    |> Enum.map(fn n -> {n, Task.async(fn -> cnode(n, timeout) end)} end)
    |> Enum.flat_map(fn {n, task} ->
      case Task.yield(task, timeout) || Task.shutdown(task, :brutal_kill) do
        {:ok, {:ok, info}} -> [Map.put(info, :node, n)]
        _ -> []
      end
    end)
  end

  defp cnode(n, timeout) do
    with {:ok, version} <- GenServer.call({:synod_cnode, n}, :version, timeout),
         nodes when is_list(nodes) <- GenServer.call({:synod_cnode, n}, :nodes, timeout) do
      {:ok, %{version: version, nodes: nodes}}
    end
  catch
    :exit, _ -> :not_a_cnode
  end
end
