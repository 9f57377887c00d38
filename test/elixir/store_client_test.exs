defmodule Synod.StoreClientTest do
  # Clients on nodes that run no member of the store (issue 18): the usual
  # deployment, a few voters and many application nodes. They reach the
  # leader through the node's leader cache (Synod.Raft.Router): puts, gets,
  # transactions and locks; the leader killed mid-call; a node that was
  # never a member and joins late; an unknown store named at once.
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Store
  alias Synod.Test.Raft
  alias Synod.Test.Store, as: Helpers

  @moduletag timeout: 120_000

  setup_all do
    ctx = Raft.start_cluster("sc", 1, &Store.start/3)
    on_exit(fn -> Raft.stop_cluster(ctx) end)
    {:ok, store: ctx.name, nodes: ctx.nodes, leader: ctx.leader, client: hd(ctx.clients)}
  end

  defp on(node, fun, args), do: :erpc.call(node, Store, fun, args, 60_000)

  test "puts, gets, transactions and locks from a node with no member",
       %{store: s, leader: leader, client: c} do
    assert :erpc.call(c, Synod.Raft.Info, :view, [s]) == nil
    assert {:ok, r1, nil} = on(c, :put, [s, "k", "1"])
    assert {:ok, %{value: "1", mod_revision: ^r1}} = on(c, :get, [s, "k"])
    # The answer taught the client's node where the leader is.
    assert :erpc.call(c, Synod.Raft.Router, :leader, [s]) == leader

    assert {:ok, r2, true, [{:put, nil}]} =
             on(c, :txn, [s, [{:mod_revision, "k", :==, r1}], [{:put, "k", "2"}], [], []])

    assert {:ok, ^r2, false, [{:range, [%{value: "2"}], 1, false}]} =
             on(c, :txn, [s, [{:value, "k", :==, "1"}], [{:put, "k", "3"}], [{:range, "k"}], []])

    assert {:ok, [%{key: "k"}], 1, false} = on(c, :range, [s, "k", [prefix: true]])
    assert {:ok, lease, 5_000} = on(c, :grant, [s, 5_000])
    assert {:ok, 5_000} = on(c, :keep_alive, [s, lease])

    assert {:ok, token} =
             :erpc.call(
               c,
               Synod.Lock,
               :lock,
               [s, "lock", &Function.identity/1, [ttl: 5_000]],
               30_000
             )

    assert is_integer(token)

    # A watch from the client's node is served on a member's node.
    :erpc.call(c, Helpers, :collect, [s, "w/", [prefix: true], 2, self(), :client_watch])
    {:ok, _, nil} = on(c, :put, [s, "w/1", "a"])
    {:ok, _, nil} = on(leader, :put, [s, "w/2", "b"])
    assert_receive {:watched, :client_watch, [{r3, "w/1"}, {r4, "w/2"}]} when r4 > r3, 30_000
  end

  test "read-only transactions and ranges are served off the log, at the revision read",
       %{store: s, leader: leader, client: c} do
    {:ok, rev, nil} = on(c, :put, [s, "r/1", "one"])
    last = Synod.Raft.status(s, leader).last_index

    for _ <- 1..20 do
      assert {:ok, ^rev, true, [{:range, [%{value: "one"}], 1, false}, {:range, [], 0, false}]} =
               on(c, :txn, [s, [{:exists, "r/1"}], [{:range, "r/1"}, {:range, "r/2"}], [], []])

      assert {:ok, ^rev, false, []} = on(c, :txn, [s, [{:absent, "r/1"}], [], [], []])
      assert {:ok, [_], 1, false} = on(c, :range, [s, "r/", [prefix: true]])
    end

    # No entry was appended for any of them.
    assert Synod.Raft.status(s, leader).last_index == last

    assert {:ok, ^rev, true, [_]} =
             on(c, :txn, [s, [], [{:range, "r/1"}], [], [consistency: :stale]])
  end

  test "a node that was never a member joins late and is served at once",
       %{store: s, nodes: nodes} do
    {:ok, _, nil} = on(hd(nodes), :put, [s, "early", "1"])
    [{_, late}] = late_peers = LocalCluster.start(1, prefix: "scl")

    try do
      assert {:ok, %{value: "1"}} = on(late, :get, [s, "early"])
      assert {:ok, _, nil} = on(late, :put, [s, "late", "1"])
      assert {:ok, %{value: "1"}} = on(hd(nodes), :get, [s, "late"])
    after
      LocalCluster.stop(late_peers)
    end
  end

  test "an unknown store or group is named at once, from members and non-members",
       %{nodes: [a | _], client: c} do
    for n <- [a, c] do
      assert {:error, {:unknown_store, :no_such_store}} =
               on(n, :put, [:no_such_store, "k", "v", [timeout: 60_000]])

      assert {:error, {:unknown_store, :no_such_store}} =
               on(n, :get, [:no_such_store, "k", [timeout: 60_000]])

      assert {:error, {:unknown_group, :no_such_group}} =
               :erpc.call(n, Synod.Raft, :command, [:no_such_group, :x, [timeout: 60_000]])
    end
  end

  test "queries take {module, function, args} and name a module the members lack",
       %{client: c, nodes: nodes} do
    g = :"scq#{System.unique_integer([:positive])}"
    dir = Path.join(System.tmp_dir!(), "synod-client-q-#{System.unique_integer([:positive])}")
    Raft.start_group(g, nodes, dir)

    try do
      {:ok, nil} = Raft.command(c, g, {:put, :k, 42})
      assert {:ok, 42} = :erpc.call(c, Synod.Raft, :query, [g, {Map, :get, [:k]}])
      assert {:ok, 42} = Synod.Raft.query(g, {Map, :get, [:k]}, consistency: :linearizable)

      assert {:error, {:undefined_module, NoSuchModule}} =
               Synod.Raft.query(g, {NoSuchModule, :f, []})

      assert {:error, {:undefined_function, {Map, :nope, 2}}} =
               Synod.Raft.query(g, {Map, :nope, [:x]})

      # A closure made in this test module, which only this VM has.
      assert {:error, {:undefined_module, __MODULE__}} = Synod.Raft.query(g, fn st -> st end)
      assert_raise ArgumentError, fn -> Synod.Raft.query(g, :not_a_query) end

      assert_raise ArgumentError, ~r/timeout/, fn ->
        Synod.Raft.command(g, :x, timeout: :infinity)
      end

      assert_raise ArgumentError, ~r/bogus/, fn ->
        Synod.Raft.query(g, {Map, :get, [:k]}, bogus: 1)
      end
    after
      for n <- nodes, do: :erpc.call(n, Synod.Raft, :stop_member, [g])
      File.rm_rf(dir)
    end
  end
end

defmodule Synod.StoreClientFailoverTest do
  # A client on a node with no member while the store's leader is killed.
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Store
  alias Synod.Test.Raft
  alias Synod.Test.Store, as: Helpers

  @moduletag timeout: 120_000

  setup do
    ctx = Raft.start_cluster("sc", 1, &Store.start/3)
    on_exit(fn -> Raft.stop_cluster(ctx) end)
    {:ok, store: ctx.name, nodes: ctx.nodes, leader: ctx.leader, client: hd(ctx.clients)}
  end

  defp on(node, fun, args), do: :erpc.call(node, Store, fun, args, 60_000)

  test "the leader killed mid-call: every call of a client on another node completes",
       %{store: s, nodes: nodes, leader: leader, client: c} do
    me = self()
    task = Task.async(fn -> :erpc.call(c, Helpers, :put_loop, [s, "p/", 200, me], 120_000) end)
    assert_receive {:put_done, 20}, 30_000
    LocalCluster.kill(leader)
    results = Task.await(task, 120_000)

    assert Enum.all?(results, &match?({:ok, _, nil}, &1)),
           inspect(Enum.reject(results, &match?({:ok, _, nil}, &1)))

    [survivor | _] = nodes -- [leader]

    assert {:ok, _, 200, false} =
             on(survivor, :range, [s, "p/", [prefix: true, count_only: true]])

    revs = Enum.map(results, &elem(&1, 1))
    assert revs == Enum.sort(revs)
    # The client's node dropped the dead leader from its cache.
    assert :erpc.call(c, Synod.Raft.Router, :leader, [s]) in (nodes -- [leader])
  end
end
