defmodule Synod.CNodeDispatchTest do
  # The C node doing the dispatcher's work on a real cluster: real epmd, real
  # :peer nodes running the hub, the real priv/synod_cnode binary.
  use ExUnit.Case, async: false

  alias Synod.CNode
  alias Synod.Test.{HubCase, RemoteHub, Wait}

  @moduletag :distributed
  @hub :cnode_hub
  @vectors Path.expand("../vectors/ring.txt", __DIR__)

  setup_all do
    distribute()
    nodes = Synod.Test.Cluster.peers!(3, prefix: "cnd")
    HubCase.start_hubs(nodes, name: @hub)
    %{nodes: nodes}
  end

  # Synod.LocalCluster.ensure_distributed/0 names this VM synod_<n> with a
  # per-VM counter, which collides with other test VMs on the same epmd;
  # the OS pid makes the name unique on the machine.
  defp distribute do
    unless Node.alive?() do
      {:ok, _} = :net_kernel.start([:"cnode_test_#{System.pid()}@127.0.0.1", :longnames])
    end
  end

  defp unique_name, do: :"synod_c#{System.unique_integer([:positive])}@127.0.0.1"

  # Starts a C node joined to `nodes`' hub and waits until it knows every member.
  defp start_cnode(nodes, opts \\ []) do
    name = unique_name()
    {view_timeout, opts} = Keyword.pop(opts, :view_timeout, 10_000)
    opts = Keyword.merge([name: name, hub: @hub, connect: [hd(nodes)]], opts)
    spec = Supervisor.child_spec({CNode, opts}, restart: :temporary)
    pid = start_supervised!(spec)
    await_view(name, nodes, opts[:hub], view_timeout)
    {pid, name}
  end

  defp await_view(name, nodes, hub, timeout \\ 10_000) do
    expected = Enum.sort(nodes)

    Wait.until(
      fn -> match?({:ok, ^expected, _, _, _}, call(name, {:ring_info, hub}, 20_000)) end,
      timeout
    )
  end

  defp call(name, request, timeout \\ 15_000),
    do: GenServer.call({:synod_cnode, name}, request, timeout)

  defp entry(id), do: {id, {Synod.Test.HubWorker, :start_link, [id]}, nil}

  test "places child ids exactly as the hub does: key bytes and owners", %{nodes: nodes} do
    {_pid, name} = start_cnode(nodes)
    me = self()

    ids = [
      "plain",
      "",
      :an_atom,
      :ünïcödé,
      0,
      255,
      256,
      -1,
      2_147_483_647,
      2_147_483_648,
      -2_147_483_648,
      -2_147_483_649,
      2 ** 64,
      -(2 ** 300),
      2 ** 2100,
      1.5,
      -0.0,
      [],
      ~c"abc",
      [1, 2 | 3],
      [:a, 1],
      Enum.to_list(1..300),
      {},
      {:a, "b", 3},
      List.to_tuple(Enum.to_list(1..300)),
      <<1::3>>,
      <<255, 7::3>>,
      me,
      make_ref(),
      {:user, 42, [~c"x", {"y"}]}
    ]

    for id <- ids do
      expected = Synod.Hub.Spec.ring_key(id)
      key = if is_atom(expected), do: Atom.to_string(expected), else: expected
      assert call(name, {:ring_key, id}) == {:ok, key}, "ring key of #{inspect(id)}"
      owners = :erpc.call(hd(nodes), Synod, :owners, [@hub, id])
      assert call(name, {:owners, @hub, id}) == {:ok, owners}, "owners of #{inspect(id)}"
    end

    # what it cannot reproduce byte for byte, it refuses, naming the reason
    for {id, why} <- [
          {%{a: 1}, :map_in_child_id},
          {{:x, %{}}, :map_in_child_id},
          {fn -> :ok end, :fun_in_child_id},
          {hd(Port.list()), :port_in_child_id}
        ] do
      assert {:error, {:bad_request, {^why, ^id}}} = call(name, {:ring_key, id})
    end
  end

  test "answers the shared ring vectors like Synod.Ring", %{nodes: nodes} do
    {_pid, name} = start_cnode(nodes)

    for {members, vnodes, seed, keys} <- ring_vectors() do
      ring = Synod.Ring.new(members, vnodes: vnodes, seed: seed)
      n = length(members)
      expected = for key <- keys, do: Synod.Ring.owners(ring, key, n)
      assert call(name, {:ring_owners, members, vnodes, seed, keys, n}) == {:ok, expected}
    end
  end

  test "starts 1000 children on their owners and stops them", %{nodes: nodes} do
    {_pid, name} = start_cnode(nodes)
    ids = for i <- 1..1000, do: "c-#{i}"

    {:ok, started} =
      call(name, {:children_start, @hub, Enum.map(ids, &entry/1), [timeout: 60_000]}, 90_000)

    assert length(started) == 1000
    assert Enum.map(started, &elem(&1, 0)) == ids

    for {id, node, {:ok, pid}} <- started do
      assert node(pid) == node
      assert [node] == :erpc.call(node, Synod, :owners, [@hub, id])
    end

    HubCase.await_placement(nodes, @hub, ids)

    # a second start answers the running pids: no child runs twice
    {:ok, again} = call(name, {:children_start, @hub, Enum.map(ids, &entry/1), []}, 60_000)
    assert again == started

    {:ok, stopped} = call(name, {:children_stop, @hub, ids, [timeout: 60_000]}, 90_000)
    assert Enum.sort(for {id, _, {:ok, _}} <- stopped, do: id) == Enum.sort(ids)
    assert Wait.until(fn -> HubCase.running(nodes, @hub) == %{} end)

    # stopping what runs nowhere: one not_found per child
    assert {:error, [{"c-1", _, {:error, :not_found}}]} =
             call(name, {:children_stop, @hub, ["c-1"], []})
  end

  test "failed starts come back as errors, per child and owner", %{nodes: nodes} do
    {_pid, name} = start_cnode(nodes)
    bad = {"will-fail", {Synod.Test.HubWorker, :start_link, ["will-fail", :fail]}, nil}
    assert {:error, results} = call(name, {:children_start, @hub, [entry("ok-1"), bad], []})
    assert [{"ok-1", _, {:ok, _}}, {"will-fail", _, {:error, {:refused, "will-fail"}}}] = results
    assert {:ok, _} = call(name, {:children_stop, @hub, ["ok-1"], []})
  end

  test "propagates events to global, local, external and listed members", %{nodes: nodes} do
    {_pid, name} = start_cnode(nodes)
    [a, b, c] = nodes

    for n <- nodes,
        do: {:ok, _} = :erpc.call(n, RemoteHub, :forward_events, [@hub, self(), [:ping]])

    # "local" and "external" are relative to the caller's node. This test's
    # node runs no hub: local reaches nobody and external every member.
    from_here = fn request -> call(name, request) end
    from_b = fn request -> :erpc.call(b, GenServer, :call, [{:synod_cnode, name}, request]) end

    cases = [
      {from_here, :global, nodes},
      {from_here, :external, nodes},
      {from_here, [a, c, :"nobody@127.0.0.1"], [a, c]},
      {from_here, :local, []},
      {from_b, :local, [b]},
      {from_b, :external, [a, c]}
    ]

    for {caller, members, expected} <- cases do
      tag = make_ref()
      assert caller.({:propagate_event, @hub, {:ping, tag}, [members: members]}) == :ok
      for n <- expected, do: assert_receive({:forwarded, ^n, {:synod, @hub, :ping, ^tag}}, 5_000)
      # The C node sent every copy before it answered; once each other
      # member's coordinator has handled all it had, an unwanted copy would
      # have been forwarded already.
      for n <- nodes -- expected,
          do: :ok = :erpc.call(n, GenServer, :call, [@hub, :synod_barrier])

      settle(nodes -- expected)

      for n <- nodes -- expected,
          do: refute_received({:forwarded, ^n, {:synod, @hub, :ping, ^tag}})
    end
  end

  # A negative check cannot be complete; after the barrier, a round trip to
  # each node gives a relay already under way the time to land.
  defp settle(nodes), do: for(n <- nodes, do: :erpc.call(n, :erlang, :node, []))

  test "dispatch_event answers as Synod.Dispatcher does", %{nodes: [a | _] = nodes} do
    {_pid, name} = start_cnode(nodes)
    {:ok, _} = :erpc.call(a, RemoteHub, :forward_events, [@hub, self(), [:job]])

    request = {:dispatch_event, @hub, :job, :payload, [members: :local]}
    expected = :erpc.call(a, Synod.Dispatcher, :dispatch_event, [@hub, :job, :payload, []])
    assert expected == {:ok, :event_dispatched}
    assert :erpc.call(a, GenServer, :call, [{:synod_cnode, name}, request]) == expected
    assert_receive {:forwarded, ^a, {:synod, @hub, :job, :payload}}, 5_000
    assert_receive {:forwarded, ^a, {:synod, @hub, :job, :payload}}, 5_000

    # a caller on no member: nothing local, the answer Synod.Dispatcher gives
    assert call(name, request) == {:ok, :event_dispatched}

    assert call(name, {:dispatch_event, @hub, :job, 1, [members: :global, discard: true]}) ==
             {:ok, :event_dispatched}

    assert_receive {:forwarded, ^a, {:synod, @hub, :job, 1}}, 5_000
  end

  test "waiting callers each get their own reply; reply_to pids get the answers too",
       %{nodes: nodes} do
    {_pid, name} = start_cnode(nodes)
    ids = for i <- 1..50, do: "w-#{i}"
    parent = self()

    # several callers wait at once; each gets exactly its own answer
    tasks =
      for chunk <- Enum.chunk_every(ids, 10) do
        Task.async(fn -> call(name, {:children_start, @hub, Enum.map(chunk, &entry/1), []}) end)
      end

    results = Task.await_many(tasks, 30_000)

    for {{:ok, r}, chunk} <- Enum.zip(results, Enum.chunk_every(ids, 10)),
        do: assert(Enum.map(r, &elem(&1, 0)) == chunk)

    # reply_to: another process receives the coordinators' answers too
    listener =
      spawn(fn ->
        receive do
          {:synod_results, _ref, node, answers} -> send(parent, {:listener, node, answers})
        end
      end)

    {:ok, [{"rt-1", node, {:ok, pid}}]} =
      call(name, {:children_start, @hub, [entry("rt-1")], [reply_to: [listener]]})

    assert_receive {:listener, ^node, [{"rt-1", {:ok, ^pid}}]}, 5_000
    {:ok, _} = call(name, {:children_stop, @hub, ["rt-1" | ids], []})
  end

  test "malformed, unknown and oversized requests get errors; the node stays up",
       %{nodes: nodes} do
    {pid, name} = start_cnode(nodes)
    spec = {Synod.Test.HubWorker, :start_link, ["x"]}

    cases = [
      {{:children_start, :other_hub, [], []}, {:unknown_hub, :other_hub}},
      {{:children_start, @hub, :not_a_list, []}, :bad_entries},
      {{:children_start, @hub, [{"x", spec}], []}, :bad_entry},
      {{:children_start, @hub, [{"x", :not_a_spec, nil}], []}, {:bad_spec, :not_a_spec}},
      {{:children_start, @hub, [{"x", %{start: spec, restart: :sometimes}, nil}], []},
       {:bad_spec, %{start: spec, restart: :sometimes}}},
      {{:children_start, @hub, [{"x", %{restart: :permanent}, nil}], []},
       {:bad_spec, %{restart: :permanent}}},
      {{:children_start, @hub, [{"x", spec, [:not_meta]}], []}, {:bad_meta, [:not_meta]}},
      {{:children_start, @hub, [{%{a: 1}, spec, nil}], []}, {:map_in_child_id, %{a: 1}}},
      {{:children_start, @hub, [], [timeout: -1]}, {:bad_option, {:timeout, -1}}},
      {{:children_start, @hub, [], [colour: :red]}, {:unknown_option, {:colour, :red}}},
      {{:children_start, @hub, [], :not_opts}, {:bad_options, :not_opts}},
      {{:children_stop, @hub, [1, 2 | 3], []}, :bad_ids},
      {{:propagate_event, @hub, {"not an atom", 1}, []}, :bad_event_id},
      {{:propagate_event, @hub, {:e, 1}, [members: :everyone]},
       {:bad_option, {:members, :everyone}}},
      {{:dispatch_event, @hub, :e, 1, [discard: :maybe]}, {:bad_option, {:discard, :maybe}}},
      {{:children_start, @hub}, :bad_arity},
      {{:what, :is, :this}, :unknown_request},
      {:unknown_atom, :unknown_request}
    ]

    for {request, why} <- cases do
      assert call(name, request) == {:error, {:bad_request, why}}, inspect(request)
    end

    too_many = for i <- 1..10_001, do: i

    assert call(name, {:children_stop, @hub, too_many, []}) ==
             {:error, {:bad_request, :too_many_children}}

    big_data = :binary.copy("x", 600_000)

    assert call(name, {:propagate_event, @hub, {:e, big_data}, []}) ==
             {:error, {:bad_request, :data_too_large}}

    assert call(name, {:children_start, @hub, [entry("d"), entry("d")], []}) ==
             {:error, {:duplicate_ids, ["d"]}}

    # over 1 MiB: refused unread (no reply, a log line); the node goes on
    send({:synod_cnode, name}, {:"$gen_call", {self(), make_ref()}, :binary.copy("y", 1_100_000)})
    # a stray answer to its pid: logged and dropped
    send({:synod_cnode, name}, :ok)
    assert call(name, :ping) == :pong
    assert Wait.until(fn -> Enum.any?(CNode.output(pid), &(&1 =~ "message too large")) end)
  end

  test "a member killed mid-request: its children come back as errors, no hang" do
    peers = Synod.LocalCluster.start(2, prefix: "cndk")
    nodes = [a, b] = Enum.map(peers, &elem(&1, 1))
    on_exit(fn -> Synod.LocalCluster.stop(peers) end)
    # its own hub: these peers see the shared cluster's peers
    hub = :cnode_kill_hub
    HubCase.start_hubs(nodes, name: hub)
    {_pid, name} = start_cnode(nodes, connect: [a], hub: hub)

    # Children owned by b whose start blocks b's coordinator (a start
    # function that sleeps), so b dies before it answers; a's start at once.
    ids = for i <- 1..400, do: "k-#{i}"
    owner = Map.new(ids, &{&1, :erpc.call(a, Synod, :owners, [hub, &1])})
    on_a = ids |> Enum.filter(&(owner[&1] == [a])) |> Enum.take(5)
    on_b = ids |> Enum.filter(&(owner[&1] == [b])) |> Enum.take(5)
    sleepy = for id <- on_b, do: {id, {:timer, :sleep, [20_000]}, nil}
    entries = Enum.map(on_a, &entry/1) ++ sleepy

    caller =
      Task.async(fn -> call(name, {:children_start, hub, entries, [timeout: 60_000]}, 90_000) end)

    Process.sleep(500)
    {b_peer, ^b} = List.keyfind(peers, b, 1)
    :peer.stop(b_peer)

    assert {:error, results} = Task.await(caller, 30_000)
    assert length(results) == 10

    for {id, node, result} <- results do
      if id in on_b do
        assert node == b and result == {:error, {:nodedown, b}}
      else
        assert node == a and match?({:ok, _}, result)
      end
    end

    # and the C node follows the membership: b is gone from its ring
    await_view(name, [a], hub)
  end

  @tag timeout: 180_000
  test "the dispatcher path runs clean under valgrind", %{nodes: nodes} do
    valgrind = System.find_executable("valgrind") || flunk("valgrind is not installed")

    wrapper = [
      valgrind,
      "--error-exitcode=99",
      "--leak-check=full",
      "--errors-for-leak-kinds=definite,indirect"
    ]

    {pid, name} =
      start_cnode(nodes, wrapper: wrapper, ready_timeout: 60_000, view_timeout: 60_000)

    ref = Process.monitor(pid)
    ids = for i <- 1..20, do: "vg-#{i}"
    assert {:ok, _} = call(name, {:children_start, @hub, Enum.map(ids, &entry/1), []}, 60_000)
    assert {:ok, _} = call(name, {:children_stop, @hub, ids, []}, 60_000)
    assert :ok = call(name, {:propagate_event, @hub, {:e, 1}, []}, 60_000)
    assert {:ok, _} = call(name, {:dispatch_event, @hub, :e, 1, [members: :global]}, 60_000)
    assert {:error, {:bad_request, _}} = call(name, {:children_start, @hub, [{"x"}], []}, 60_000)

    assert {:ok, _} =
             call(name, {:ring_owners, ["a", "b"], 16, :binary.copy("k", 16), ["x"], 2}, 60_000)

    assert Enum.any?(CNode.output(pid), &(&1 =~ "Memcheck")), "not running under valgrind"
    {_, 0} = System.cmd("kill", ["-TERM", to_string(CNode.os_pid(pid))])
    assert_receive {:DOWN, ^ref, :process, ^pid, reason}, 90_000

    assert reason == {:shutdown, {:cnode_exited, 0}},
           "valgrind reported errors: #{inspect(reason)}"
  end

  defp ring_vectors do
    @vectors
    |> File.read!()
    |> String.split("\n")
    |> Enum.chunk_by(&String.starts_with?(&1, "#"))
    |> Enum.reject(fn [line | _] -> String.starts_with?(line, "#") or line == "" end)
    |> Enum.map(&parse_vector/1)
  end

  defp parse_vector(lines) do
    {members, vnodes, seed, keys} =
      Enum.reduce(lines, {[], nil, nil, []}, fn line, {ms, v, s, ks} ->
        case String.split(line) do
          ["ring", vn, seed] ->
            {ms, String.to_integer(vn), Base.decode16!(seed, case: :lower), ks}

          ["member", name, "1"] ->
            {[hex(name) | ms], v, s, ks}

          ["member", name, w] ->
            {[{hex(name), String.to_integer(w)} | ms], v, s, ks}

          ["key", key | _] ->
            {ms, v, s, [hex(key) | ks]}

          _ ->
            {ms, v, s, ks}
        end
      end)

    {Enum.reverse(members), vnodes, seed, Enum.reverse(keys)}
  end

  defp hex("-"), do: ""
  defp hex(h), do: Base.decode16!(h, case: :lower)
end
