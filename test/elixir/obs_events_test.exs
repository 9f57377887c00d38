defmodule Synod.ObsEventsTest do
  # Every event family Synod emits from the Raft driver, the store and the
  # C node: attach (on this node or a peer), act, assert. The hub's and the
  # coordination primitives' events are emitted by their own modules; here
  # only Synod.Metrics' handling of them is checked (test/elixir/obs_http_test.exs).
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.{Obs, Raft}

  @moduletag timeout: 120_000

  setup do
    LocalCluster.ensure_distributed()
    dir = Path.join(System.tmp_dir!(), "synod-obs-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    id = {:obs_test, System.unique_integer([:positive])}
    on_exit(fn -> Synod.Telemetry.detach(id) end)
    {:ok, dir: dir, id: id}
  end

  @raft [
    [:synod, :raft, :role],
    [:synod, :raft, :leader],
    [:synod, :raft, :commit],
    [:synod, :raft, :fsync],
    [:synod, :raft, :snapshot, :sent],
    [:synod, :raft, :snapshot, :installed]
  ]

  test "raft: role, leader, commit latency and fsync events of a one-member group", ctx do
    :ok = Obs.forward(ctx.id, @raft, self())
    group = :"obs_r#{System.unique_integer([:positive])}"
    me = node()

    :ok = Synod.Raft.start_group(group, [me], ctx.dir, machine: Synod.Raft.KV)

    on_exit(fn -> Synod.Raft.stop_member(group) end)

    assert_receive {:obs_event, ^me, [:synod, :raft, :role], %{term: term},
                    %{group: ^group, node: ^me, role: :leader, previous: previous}},
                   5_000

    assert previous in [:candidate, :pre_candidate]
    assert term >= 1

    assert_receive {:obs_event, ^me, [:synod, :raft, :leader], %{term: ^term},
                    %{group: ^group, node: ^me, leader: ^me, previous: nil}}

    assert {:ok, nil} = Synod.Raft.command(group, {:put, :a, 1})

    assert_receive {:obs_event, ^me, [:synod, :raft, :commit], %{latency: latency, entries: n},
                    %{group: ^group, node: ^me}}

    assert is_integer(latency) and latency > 0 and n >= 1

    assert_receive {:obs_event, ^me, [:synod, :raft, :fsync], %{duration: d, bytes: bytes},
                    %{group: ^group, node: ^me}}

    assert is_integer(d) and d > 0 and bytes > 0
  end

  test "raft: a follower that fell behind the leader's snapshot gets one: sent and installed",
       ctx do
    peers = LocalCluster.start(3, prefix: "obss")
    on_exit(fn -> LocalCluster.stop(peers) end)
    nodes = Enum.map(peers, &elem(&1, 1))
    group = :"obs_s#{System.unique_integer([:positive])}"
    for n <- nodes, do: :ok = :erpc.call(n, Obs, :forward, [ctx.id, @raft, self()])
    leader = Raft.start_group(group, nodes, ctx.dir, snapshot_every: 20)
    [victim | _] = nodes -- [leader]
    :ok = :erpc.call(victim, Synod.Raft, :stop_member, [group])

    for i <- 1..60, do: {:ok, _} = Raft.command(leader, group, {:put, i, i})
    assert Raft.status(leader, group).first_index > 2

    {:ok, _} =
      :erpc.call(victim, Synod.Raft, :start_member, [
        [
          name: group,
          voters: nodes,
          data_dir: Path.join(ctx.dir, Atom.to_string(victim)),
          machine: Synod.Raft.KV,
          snapshot_every: 20
        ]
      ])

    assert_receive {:obs_event, ^leader, [:synod, :raft, :snapshot, :sent], %{bytes: sent},
                    %{group: ^group, node: ^leader, to: ^victim, index: index}},
                   15_000

    assert sent > 0 and is_integer(index) and index >= 20

    assert_receive {:obs_event, ^victim, [:synod, :raft, :snapshot, :installed], %{bytes: bytes},
                    %{group: ^group, node: ^victim, index: ^index}},
                   15_000

    # Chunked snapshots: the leader sends its snapshot file's bytes, the
    # follower installs the same file.
    assert bytes == sent
  end

  test "store: one request event per call, by kind and result; watch lag while a watch catches up",
       ctx do
    events = [[:synod, :store, :request], [:synod, :store, :watch, :lag]]
    :ok = Obs.forward(ctx.id, events, self())
    store = :"obs_st#{System.unique_integer([:positive])}"
    me = node()
    :ok = Synod.Store.start(store, [me], ctx.dir)
    on_exit(fn -> Synod.Store.stop_member(store) end)
    Raft.wait_leader(store, [me])

    {:ok, _, _} = Synod.Store.put(store, "k", "v")

    assert_receive {:obs_event, ^me, [:synod, :store, :request], %{duration: d},
                    %{store: ^store, kind: :put, result: :ok}}

    assert is_integer(d) and d > 0
    {:ok, _} = Synod.Store.get(store, "k")
    assert_receive {:obs_event, ^me, [:synod, :store, :request], _, %{kind: :range, result: :ok}}
    {:ok, _, true, _} = Synod.Store.txn(store, [], [{:range, "k"}])
    assert_receive {:obs_event, ^me, [:synod, :store, :request], _, %{kind: :txn, result: :ok}}
    {:ok, lease, _} = Synod.Store.grant(store, 5_000)
    assert_receive {:obs_event, ^me, [:synod, :store, :request], _, %{kind: :grant}}

    assert {:error, _} = Synod.Store.put(store, "k2", "v", lease: lease + 1000)

    assert_receive {:obs_event, ^me, [:synod, :store, :request], _, %{kind: :put, result: :error}}
  end

  test "store: watch lag while a watch catches up, 0 once it has", ctx do
    :ok = Obs.forward(ctx.id, [[:synod, :store, :watch, :lag]], self())
    store = :"obs_wl#{System.unique_integer([:positive])}"
    me = node()
    :ok = Synod.Store.start(store, [me], ctx.dir)
    on_exit(fn -> Synod.Store.stop_member(store) end)
    Raft.wait_leader(store, [me])

    # 3,000 events in 30 revisions; a watch from revision 1 catches up in
    # batches of at most 1,000 events and is behind in between.
    Synod.Test.Store.fill(store, 3_000, 100, 2)
    {:ok, ref} = Synod.Store.watch(store, "fill/", prefix: true, from: 1)
    on_exit(fn -> Synod.Store.unwatch(store, ref) end)

    lags = collect_lags(store, [])
    assert Enum.any?(lags, &(&1 > 0)), "no lag seen: #{inspect(lags)}"
    assert List.last(lags) == 0
  end

  defp collect_lags(store, acc) do
    receive do
      {:obs_event, _, [:synod, :store, :watch, :lag], %{events: n}, %{store: ^store}} ->
        if n == 0 and acc != [], do: Enum.reverse([n | acc]), else: collect_lags(store, [n | acc])
    after
      5_000 -> Enum.reverse(acc)
    end
  end

  @tag :cnode
  test "C node: connection up and down, requests by kind and count", ctx do
    events = [[:synod, :cnode, :connection], [:synod, :cnode, :request]]
    :ok = Obs.forward(ctx.id, events, self())
    name = :"obs_c#{System.unique_integer([:positive])}@127.0.0.1"
    {:ok, pid} = Synod.CNode.start_link(name: name)
    assert_receive {:obs_event, _, [:synod, :cnode, :connection], %{}, %{node: ^name, state: :up}}

    assert :pong = Synod.CNode.call(name, :ping)

    assert_receive {:obs_event, _, [:synod, :cnode, :request], %{count: 1},
                    %{node: ^name, kind: :ping}}

    # A hub the C node does not serve: refused, but the request was made.
    reply =
      Synod.CNode.call(
        name,
        {:children_start, :not_its_hub, [{"a", nil, nil}, {"b", nil, nil}], []}
      )

    assert match?({:error, _}, reply)

    assert_receive {:obs_event, _, [:synod, :cnode, :request], %{count: 2},
                    %{node: ^name, kind: :children_start}}

    assert [%{node: ^name, version: "0.1.0"}] =
             Enum.filter(Synod.status().cnodes, &(&1.node == name))

    :ok = Synod.CNode.stop(pid)

    assert_receive {:obs_event, _, [:synod, :cnode, :connection], %{},
                    %{node: ^name, state: :down}}
  end
end
