defmodule Synod.Test.Cluster do
  @moduledoc false
  # One harness for suites that run a store on real peers: the fault suite
  # (test/support/fault), the PropEr model of the store (test/proper) and
  # whoever else wants peers with a store and the faults to inject into them,
  # and, through peers!/2, tmp_dir!/1 and store!/2, the ExUnit suites that
  # only need peers (or peers with a store) that go away with the test.
  #
  # A cluster is a value: its peers by node, the store's name, voters and
  # data root, and each peer's OS pid (for kill -9 and SIGSTOP/SIGCONT). A
  # killed peer is restarted under its own name and its member restarted from
  # its own data dir (Path.join(data_root, node), as Synod.Store.start/4 lays
  # it out). Every call that reaches a peer has a bound, so a paused or cut
  # peer never hangs the controller.

  alias Synod.{LocalCluster, Store}

  defstruct store: nil, nodes: [], peers: %{}, os_pids: %{}, data_root: nil, store_opts: []

  @type t :: %__MODULE__{}

  @doc """
  Starts `count` peers and a store on all of them. Options: `:store` (its
  name, default `:fault`), `:data_root` (required), `:prefix`, `:store_opts`
  (extra options of `Synod.Store.start/4`), `:before_store` (a function of
  the node list run before the store starts, e.g. to mount a small disk),
  `:env` (a function of the peer's index, 1..count, giving its OS
  environment, e.g. a test-only trigger for one peer).
  """
  def start(count, opts) do
    root = Keyword.fetch!(opts, :data_root)
    File.mkdir_p!(root)
    prefix = Keyword.get(opts, :prefix, "fault")
    env = Keyword.get(opts, :env, fn _ -> [] end)
    peers = Enum.flat_map(1..count, &LocalCluster.start(1, prefix: prefix, env: env.(&1)))
    nodes = Enum.map(peers, &elem(&1, 1))

    c = %__MODULE__{
      store: Keyword.get(opts, :store, :fault),
      nodes: nodes,
      peers: Map.new(peers, fn {pid, node} -> {node, pid} end),
      os_pids: Map.new(nodes, &{&1, :erpc.call(&1, :os, :getpid, [])}),
      data_root: root,
      store_opts: Keyword.get(opts, :store_opts, [])
    }

    Keyword.get(opts, :before_store, fn _ -> :ok end).(nodes)
    :ok = Store.start(c.store, nodes, root, c.store_opts)
    wait_leader(c, nodes)
    c
  end

  @doc """
  For ExUnit: starts `count` peers (`:prefix`, `:names`, `:env` as in
  `Synod.LocalCluster.start/2`), stops them when the test (or, called from
  `setup_all`, the module) ends, and returns their nodes.
  """
  def peers!(count, opts \\ []) do
    peers = LocalCluster.start(count, opts)
    ExUnit.Callbacks.on_exit(fn -> LocalCluster.stop(peers) end)
    Enum.map(peers, &elem(&1, 1))
  end

  @doc """
  For ExUnit: a fresh data dir under the system's tmp dir, removed when the
  test (or the module, from `setup_all`) ends.
  """
  def tmp_dir!(prefix) do
    dir = Path.join(System.tmp_dir!(), "synod-#{prefix}-#{System.unique_integer([:positive])}")
    ExUnit.Callbacks.on_exit(fn -> File.rm_rf(dir) end)
    dir
  end

  @doc """
  For ExUnit: `count` peers running a store under a fresh name, with its
  data in a fresh dir; both go when the test (or the module) ends. Options:
  `:prefix` (default `"st"`), `:store` (its name, default a fresh one) and
  `:store_opts` (for `Synod.Store.start/4`).
  Returns `%{store, nodes, leader, dir}`.
  """
  def store!(count, opts \\ []) do
    prefix = Keyword.get(opts, :prefix, "st")
    dir = tmp_dir!(prefix)
    nodes = peers!(count, prefix: prefix)

    store =
      Keyword.get_lazy(opts, :store, fn -> :"#{prefix}#{System.unique_integer([:positive])}" end)

    :ok = Store.start(store, nodes, dir, Keyword.get(opts, :store_opts, []))
    %{store: store, nodes: nodes, leader: Synod.Test.Raft.wait_leader(store, nodes), dir: dir}
  end

  @doc """
  For ExUnit: a one-voter store on this node (distributed first, if need
  be) under a fresh name, with its data in a fresh dir; both go when the
  test (or the module) ends. Returns the store's name.
  """
  def local_store!(prefix) do
    LocalCluster.ensure_distributed()
    dir = tmp_dir!(prefix)
    store = :"#{prefix}#{System.unique_integer([:positive])}"
    :ok = Store.start(store, [node()], dir)
    ExUnit.Callbacks.on_exit(fn -> Store.stop_member(store) end)
    Synod.Test.Wait.until(fn -> Synod.leader?(store) end)
    store
  end

  @doc "Stops every peer (paused ones are resumed first so they can stop)."
  def stop(%__MODULE__{} = c) do
    Enum.each(c.nodes, &resume(c, &1))
    LocalCluster.stop(Enum.map(c.peers, fn {node, pid} -> {pid, node} end))
  end

  @doc "The data dir of `node`'s member."
  def data_dir(c, node), do: Path.join(c.data_root, Atom.to_string(node))

  @doc "Kills `node`'s VM at once (kill -9) and waits until this VM sees it down."
  def kill(c, node) do
    resume(c, node)
    Node.monitor(node, true)
    System.cmd("kill", ["-9", to_string(c.os_pids[node])])

    receive do
      {:nodedown, ^node} -> :ok
    after
      10_000 -> :ok
    end

    :ok
  end

  @doc """
  Restarts a killed peer under its own name and its member from its own
  data dir; `before_member` (a function of the node) runs on the new VM's
  behalf before the member starts (e.g. to attach a log handler there).
  """
  def restart(c, node, before_member \\ fn _ -> :ok end) do
    [alive, _host] = node |> Atom.to_string() |> String.split("@")
    [{pid, ^node}] = LocalCluster.start(1, names: [alive])
    c = %{c | peers: Map.put(c.peers, node, pid)}
    c = %{c | os_pids: Map.put(c.os_pids, node, :erpc.call(node, :os, :getpid, []))}
    before_member.(node)

    opts = [name: c.store, voters: c.nodes, data_dir: data_dir(c, node)] ++ c.store_opts
    {:ok, _} = :erpc.call(node, Store, :start_member, [opts], 30_000)
    c
  end

  @doc "Stops `node`'s OS process (SIGSTOP): it keeps its sockets but answers nothing."
  def pause(c, node), do: signal(c, node, "STOP")

  @doc "Resumes a paused node (SIGCONT); harmless on a running one."
  def resume(c, node), do: signal(c, node, "CONT")

  defp signal(c, node, sig) do
    System.cmd("kill", ["-#{sig}", to_string(c.os_pids[node])], stderr_to_stdout: true)
    :ok
  end

  @doc "Cuts every node of `a` from every node of `b` (the cookie cut of Synod.LocalCluster)."
  def partition(_c, a, b), do: LocalCluster.partition(a, b)

  @doc "Heals a partition made by partition/3."
  def heal(_c, a, b), do: LocalCluster.heal(a, b)

  @doc "The node that `node`'s member names as the store's leader, or nil (bounded)."
  def leader_seen_by(c, node) do
    :erpc.call(node, Synod.Raft, :leader, [c.store], 2_000)
  catch
    _, _ -> nil
  end

  @doc "Waits until every node of `nodes` names the same leader among them; returns it."
  def wait_leader(c, nodes, timeout \\ 30_000),
    do: Synod.Test.Raft.wait_leader(c.store, nodes, timeout)
end
