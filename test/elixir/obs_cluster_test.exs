defmodule Synod.ObsClusterTest do
  # The real emitters end to end: on three :peer nodes running a store and
  # a hub, with an observer (and so Synod.Metrics) on each, the test starts
  # and stops hub children, takes locks, wins and leaves an election,
  # enqueues and dequeues, moves a task through its states; then it scrapes
  # every node's /metrics (parsed by the text-format checker) and
  # /status.json and finds what it did, each start counted once across the
  # cluster (every member reports the starts it learns of; each node's
  # metrics count only its own).
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.{HubCase, Obs, PromChecker, RemoteHub, Wait}

  @moduletag :distributed
  @moduletag timeout: 180_000

  test "what was done on the cluster is in /metrics and /status.json" do
    peers = LocalCluster.start(3, prefix: "obsc")
    on_exit(fn -> LocalCluster.stop(peers) end)
    [a, b, c] = nodes = Enum.map(peers, &elem(&1, 1))
    dir = Path.join(System.tmp_dir!(), "synod-obs-cluster-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)

    store = :obs_cluster_store
    :ok = Synod.Store.start(store, nodes, dir)
    _ = Synod.Test.Raft.wait_leader(store, nodes)

    # The observers (and their metrics) first, so that they see everything.
    ports = Map.new(nodes, &{&1, :erpc.call(&1, Obs, :start_observer, [[port: 0]])})

    hub = :obs_cluster_hub
    HubCase.start_hubs(nodes, name: hub)
    ids = RemoteHub.ids("oc", 45)

    {:ok, %{errors: []}} =
      :erpc.call(a, RemoteHub, :start_many, [hub, "oc", 45, [timeout: 30_000]])

    HubCase.await_placement(nodes, hub, ids)
    stopped = Enum.take(ids, 15)
    {:ok, _} = :erpc.call(b, Synod, :stop_children, [hub, stopped])
    HubCase.await_placement(nodes, hub, ids -- stopped)
    local = Map.new(nodes, &{&1, length(:erpc.call(&1, Synod, :children, [hub, :local]))})
    assert Enum.sum(Map.values(local)) == 30

    # Coordination, each on its own node.
    tokens = :erpc.call(a, Obs, :lock, [store, "oc/lock", 3])
    assert length(tokens) == 3
    :ok = :erpc.call(a, Obs, :election_cycle, [store, :oc_election, "cand-a"])
    :ok = :erpc.call(b, Obs, :election_cycle, [store, :oc_election, "cand-b"])
    {:ok, 3} = :erpc.call(b, Obs, :queue, [store, "ocq", 5, 2])
    task = :erpc.call(c, Obs, :task_cycle, [store, "oct"])
    assert is_binary(task) or is_integer(task)

    # The hub's counters settle once every member has reported its changes.
    scrape = fn n ->
      {200, _, body} = Obs.get(ports[n], "/metrics")
      {:ok, samples} = PromChecker.check(body)
      samples
    end

    value = fn samples, name, labels ->
      samples
      |> Enum.filter(fn {n, l, _} -> n == name and Map.take(l, Map.keys(labels)) == labels end)
      |> Enum.map(&elem(&1, 2))
      |> Enum.sum()
    end

    h = Atom.to_string(hub)
    s = Atom.to_string(store)

    Wait.until(
      fn ->
        Enum.all?(nodes, fn n ->
          samples = scrape.(n)
          own = %{"hub" => h, "node" => Atom.to_string(n)}

          value.(samples, "synod_hub_children_started_total", own) -
            value.(samples, "synod_hub_children_stopped_total", own) == local[n]
        end)
      end,
      15_000
    )

    all = Map.new(nodes, &{&1, scrape.(&1)})

    # Each node counts only its own children: no node reports another's,
    # and the cluster's sum is what was started and stopped, once each.
    for n <- nodes,
        {name, l, _} <- all[n],
        name =~ ~r/^synod_hub_children_(started|stopped)/,
        do: assert(l["node"] == Atom.to_string(n), "#{n} reports #{inspect(l)}")

    started =
      Enum.sum(
        for n <- nodes, do: value.(all[n], "synod_hub_children_started_total", %{"hub" => h})
      )

    stopped_n =
      Enum.sum(
        for n <- nodes, do: value.(all[n], "synod_hub_children_stopped_total", %{"hub" => h})
      )

    assert started == 45.0
    assert stopped_n == 15.0

    # Locks (on a): three waits, three holds released ok.
    assert value.(all[a], "synod_lock_wait_seconds_count", %{"store" => s}) == 3.0

    assert value.(all[a], "synod_lock_hold_seconds_count", %{"store" => s, "result" => "ok"}) ==
             3.0

    # Elections: one win on a, one on b; the cluster counts two changes.
    e = %{"store" => s, "election" => "oc_election"}
    assert value.(all[a], "synod_election_leader_changes_total", e) == 1.0
    assert value.(all[b], "synod_election_leader_changes_total", e) == 1.0
    assert value.(all[c], "synod_election_leader_changes_total", e) == 0.0

    # The queue's depth as b counted it.
    assert value.(all[b], "synod_queue_depth", %{"store" => s, "queue" => "ocq"}) == 3.0

    # The task on c: created, reserved, terminated.
    tr = fn from, to ->
      value.(all[c], "synod_tasks_transitions_total", %{"store" => s, "from" => from, "to" => to})
    end

    assert tr.("none", "starting") == 1.0
    assert tr.("starting", "running") == 1.0
    assert tr.("running", "terminated") == 1.0

    # Store requests were timed (the coordination above is made of them).
    assert value.(all[b], "synod_store_request_duration_seconds_count", %{"store" => s}) > 0

    # /status.json on a: children per node, and a's election changes.
    {200, _, json} = Obs.get(ports[a], "/status.json")
    per_node = local |> Enum.map(fn {n, k} -> ~s("#{n}":#{k}) end)
    for frag <- per_node, do: assert(json =~ frag, "#{frag} not in #{json}")
    assert json =~ ~r/"recent_election_changes":\[\{/
    assert json =~ ~s("leader":"cand-a")
    assert json =~ ~s("previous":"cand-a")
    refute json =~ ~s("cand-b")
  end
end
