defmodule Synod.Test.Raft do
  @moduledoc false
  # Helpers for Raft tests on real peers. Every function that runs on a peer
  # is defined here, in a compiled module.

  import ExUnit.Assertions
  alias Synod.Test.Wait

  @doc "Starts a group on `nodes` with data under `dir` and waits for its leader."
  def start_group(group, nodes, dir, opts \\ []) do
    :ok = Synod.Raft.start_group(group, nodes, dir, [machine: Synod.Raft.KV] ++ opts)
    wait_leader(group, nodes)
  end

  @doc """
  Starts 3 voter peers, `start.(name, voters, dir)` on them (a group or a
  store under a fresh name; it must answer :ok) and `clients` more peers
  that run no member. Returns `%{name, nodes, leader, clients, peers, dir}`;
  `stop_cluster/1` undoes it.
  """
  def start_cluster(prefix, clients, start) do
    dir = Path.join(System.tmp_dir!(), "synod-#{prefix}-#{System.unique_integer([:positive])}")
    voters = Synod.LocalCluster.start(3, prefix: "#{prefix}v")
    others = if clients > 0, do: Synod.LocalCluster.start(clients, prefix: "#{prefix}c"), else: []
    nodes = Enum.map(voters, &elem(&1, 1))
    name = :"#{prefix}#{System.unique_integer([:positive])}"
    :ok = start.(name, nodes, dir)

    %{
      name: name,
      nodes: nodes,
      leader: wait_leader(name, nodes),
      clients: Enum.map(others, &elem(&1, 1)),
      peers: voters ++ others,
      dir: dir
    }
  end

  @doc "Stops what `start_cluster/3` started."
  def stop_cluster(%{peers: peers, dir: dir}) do
    Synod.LocalCluster.stop(peers)
    File.rm_rf(dir)
  end

  @doc "Waits until every node of `nodes` names the same leader, one of `nodes`; returns it."
  def wait_leader(group, nodes, timeout \\ 10_000) do
    Wait.until(
      fn ->
        case Enum.uniq(Enum.map(nodes, &:erpc.call(&1, Synod.Raft, :leader, [group]))) do
          [leader] when leader != nil -> if leader in nodes, do: leader
          _ -> nil
        end
      end,
      timeout
    )
  end

  @doc "Runs a command from `node` (which routes it to the leader)."
  def command(node, group, cmd, timeout \\ 5_000),
    do: :erpc.call(node, Synod.Raft, :command, [group, cmd, [timeout: timeout]], timeout + 1_000)

  @doc "The KV state as `node`'s member has applied it (no read-index)."
  def local_state(node, group) do
    {:ok, state} =
      :erpc.call(node, Synod.Raft, :query, [group, &Function.identity/1, [consistency: :stale]])

    state
  end

  def status(node, group), do: :erpc.call(node, Synod.Raft, :status, [group])

  @doc "Waits until all `nodes` have applied the same index and hold the same state."
  def wait_converged(group, nodes, timeout \\ 10_000) do
    Wait.until(
      fn ->
        views = Enum.map(nodes, &{status(&1, group).applied, local_state(&1, group)})
        length(Enum.uniq(views)) == 1
      end,
      timeout
    )
  end

  @doc "Sends every leader-watch event of each node's member to `pid`, keyed by node."
  def watch_all(group, nodes, pid \\ self()) do
    for n <- nodes, do: :ok = :erpc.call(n, Synod.Raft, :add_leader_watch, [group, {:w, n}, pid])
    :ok
  end

  @doc "Every leader-watch message now in the mailbox, oldest first, as {node, event, before, after}."
  def drain_events(acc \\ []) do
    receive do
      {:synod_leader_watch, _group, {:w, n}, event, before, after_} ->
        drain_events([{n, event, before, after_} | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  @doc """
  Checks what every watch event must satisfy: never two leaders in one term
  (across all nodes), a :become_leader names its own node as leader, terms
  never go down on a node, and each event's states are well formed.
  """
  def check_events(events) do
    leaders =
      for {_n, _e, before, after_} <- events,
          s <- [before, after_],
          s.leader != nil,
          do: {s.term, s.leader}

    for {term, ls} <- Enum.group_by(leaders, &elem(&1, 0), &elem(&1, 1)) do
      assert length(Enum.uniq(ls)) == 1, "two leaders in term #{term}: #{inspect(Enum.uniq(ls))}"
    end

    for {n, event, before, after_} <- events do
      assert after_.term >= before.term

      case event do
        :become_leader -> assert after_.role == :leader and after_.leader == n
        :become_follower -> assert after_.role == :follower
      end
    end

    for {_n, evs} <- Enum.group_by(events, &elem(&1, 0)) do
      terms = Enum.map(evs, fn {_, _, _, a} -> a.term end)
      assert terms == Enum.sort(terms)
    end

    events
  end

  # -- for bench/raft_bench.exs (run on a peer) --

  @doc "Microseconds of each of `n` sequential commands from this node."
  def latency(group, n) do
    for i <- 1..n do
      t0 = System.monotonic_time(:microsecond)
      {:ok, _} = Synod.Raft.command(group, {:put, i, i})
      System.monotonic_time(:microsecond) - t0
    end
  end

  @doc "Commands per second with `clients` concurrent clients on this node."
  def throughput(group, clients, per_client) do
    Synod.Test.Stats.rate(clients, per_client, fn c ->
      for i <- 1..per_client,
          do: {:ok, _} = Synod.Raft.command(group, {:put, {c, i}, i}, timeout: 30_000)
    end)
  end

  @doc "Commands per second of `n` puts through one pipeline with `window` in flight, on this node."
  def pipelined_rate(group, n, window) do
    {results, us} = pipelined(group, n, window, &{:put, {:pipe, &1}, &1})
    true = Enum.all?(results, &match?({:ok, _}, &1))
    round(n / (us / 1_000_000))
  end

  @doc """
  Runs `n` commands `make.(i)` through one `Synod.Raft.Pipeline` with
  `window` in flight and returns `{results in send order, microseconds}`.
  `on_sent.(i)` runs after the i-th send.
  """
  def pipelined(group, n, window, make, on_sent \\ fn _ -> :ok end) do
    t0 = System.monotonic_time(:microsecond)
    pipe = Synod.Raft.Pipeline.new(group, window: window, timeout: 30_000)
    {pipe, order, results} = pipe_loop(pipe, 1, n, make, on_sent, [], %{})
    {_, results} = drain_pipe(pipe, results)
    us = System.monotonic_time(:microsecond) - t0
    {Enum.map(Enum.reverse(order), &Map.fetch!(results, &1)), us}
  end

  defp pipe_loop(pipe, i, n, _make, _on_sent, order, results) when i > n,
    do: {pipe, order, results}

  defp pipe_loop(pipe, i, n, make, on_sent, order, results) do
    case Synod.Raft.Pipeline.send(pipe, make.(i)) do
      {:ok, ref, pipe} ->
        on_sent.(i)
        pipe_loop(pipe, i + 1, n, make, on_sent, [ref | order], results)

      {:error, :busy} ->
        {:ok, ref, result, pipe} = Synod.Raft.Pipeline.next(pipe, 60_000)
        pipe_loop(pipe, i, n, make, on_sent, order, Map.put(results, ref, result))
    end
  end

  defp drain_pipe(pipe, results) do
    case Synod.Raft.Pipeline.next(pipe, 60_000) do
      {:ok, ref, result, pipe} -> drain_pipe(pipe, Map.put(results, ref, result))
      {:timeout, pipe} -> {pipe, results}
    end
  end

  # -- for bench/groups_bench.exs (run on a peer) --

  @doc """
  Starts a member of each of `groups` on this node (voters `nodes`, data
  under `root/<group>/<node>`, the KV machine, plus the member options
  `extra`) and returns how many started.
  """
  def start_members(groups, nodes, root, extra \\ []) do
    # With log: :wal the node's WAL is under root/wal/<node>.
    extra =
      if extra[:log] == :wal,
        do: [wal_dir: Path.join([root, "wal", Atom.to_string(node())])] ++ extra,
        else: extra

    Enum.count(groups, fn g ->
      dir = Path.join([root, Atom.to_string(g), Atom.to_string(node())])
      opts = [name: g, voters: nodes, data_dir: dir, machine: Synod.Raft.KV] ++ extra
      match?({:ok, _}, Synod.Raft.start_member(opts))
    end)
  end

  @doc """
  Counters on this node, for bench/groups_bench.exs: `{persists, wal_syncs,
  runtime_ms}`,
  the member persists that made records durable since the first call
  ([:synod, :raft, :fsync] events: with `log: :files` each is one fdatasync
  of the member's log; with `log: :wal` one wait for the WAL) and the
  fdatasyncs of the node's shared WAL (0 while it does not run), and the
  VM's CPU time so far (`:erlang.statistics(:runtime)`, ms).
  """
  def fsync_counts do
    counter =
      case :persistent_term.get({__MODULE__, :persists}, nil) do
        nil ->
          c = :counters.new(1, [:write_concurrency])
          :persistent_term.put({__MODULE__, :persists}, c)

          :ok =
            Synod.Telemetry.attach(
              {__MODULE__, :persists},
              [:synod, :raft, :fsync],
              &__MODULE__.count_persist/4,
              c
            )

          c

        c ->
          c
      end

    wal = if stats = Synod.Raft.Wal.stats(), do: stats.syncs, else: 0
    {runtime, _} = :erlang.statistics(:runtime)
    {:counters.get(counter, 1), wal, runtime}
  end

  @doc false
  def count_persist(_event, _measurements, _metadata, counter), do: :counters.add(counter, 1, 1)

  @doc "Stops this node's members of `groups`."
  def stop_members(groups), do: Enum.each(groups, &Synod.Raft.stop_member/1)

  @doc "How many of `groups` this node's members name a leader for, and how many each node leads."
  def leaders_seen(groups) do
    leaders = Enum.map(groups, &Synod.Raft.leader/1)
    {Enum.count(leaders, &(&1 != nil)), Enum.frequencies(Enum.reject(leaders, &is_nil/1))}
  end

  @doc """
  Bytes of process memory of this node's members of `groups` (the BEAM side
  only), each measured right after a garbage collection of the member.
  """
  def members_memory(groups) do
    groups
    |> Enum.map(&Process.whereis(Synod.Raft.member_name(&1)))
    |> Enum.reject(&is_nil/1)
    |> Enum.map(fn pid ->
      :erlang.garbage_collect(pid)
      elem(Process.info(pid, :memory) || {:memory, 0}, 1)
    end)
    |> Enum.sum()
  end

  @doc """
  What this node's member of `group` receives over `ms` (traced with
  `:erlang.trace/3`): `%{raft: n, tick: n, other: n}`, the messages from
  other members, its `:tick` timer's messages and the rest.
  """
  def member_receives(group, ms) do
    pid = Process.whereis(Synod.Raft.member_name(group))
    tracer = spawn(fn -> count_receives(%{raft: 0, tick: 0, other: 0}) end)
    1 = :erlang.trace(pid, true, [:receive, {:tracer, tracer}])
    Process.sleep(ms)
    1 = :erlang.trace(pid, false, [:receive])
    # Trace messages already sent arrive before this one (same sender).
    :erlang.trace_delivered(pid)
    receive do: ({:trace_delivered, ^pid, _} -> :ok)
    send(tracer, {:done, self()})
    receive do: ({:receives, counts} -> counts)
  end

  defp count_receives(counts) do
    receive do
      {:trace, _, :receive, {:synod_raft, _, _, _, _}} -> count_receives(inc(counts, :raft))
      {:trace, _, :receive, :tick} -> count_receives(inc(counts, :tick))
      {:trace, _, :receive, _} -> count_receives(inc(counts, :other))
      {:done, from} -> send(from, {:receives, counts})
    end
  end

  defp inc(counts, key), do: Map.update!(counts, key, &(&1 + 1))

  @doc "This VM's resident set in bytes (/proc/self/status VmRSS)."
  def rss do
    [kb] =
      for line <- String.split(File.read!("/proc/self/status"), "\n"),
          String.starts_with?(line, "VmRSS:"),
          do: line |> String.split() |> Enum.at(1) |> String.to_integer()

    kb * 1024
  end

  @doc """
  CPU this VM used over `ms` of wall time, as {runtime ms (`:erlang.statistics(:runtime)`,
  user time of all schedulers), utime+stime ms from /proc/self/stat}.
  """
  def cpu_over(ms) do
    {r0, _} = :erlang.statistics(:runtime)
    p0 = proc_cpu_ms()
    Process.sleep(ms)
    {r1, _} = :erlang.statistics(:runtime)
    {r1 - r0, proc_cpu_ms() - p0}
  end

  # utime + stime of this OS process in ms (clock ticks of 1/100 s).
  defp proc_cpu_ms do
    stat = File.read!("/proc/self/stat")
    [_, after_comm] = String.split(stat, ") ", parts: 2)
    fields = String.split(after_comm)
    (String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))) * 10
  end

  @doc """
  One synchronous client: puts to `group` until `ms` have passed; returns
  {commands, microseconds}.
  """
  def client_for(group, c, ms) do
    t0 = System.monotonic_time(:microsecond)
    deadline = t0 + ms * 1_000
    n = client_loop(group, c, deadline, 0)
    {n, System.monotonic_time(:microsecond) - t0}
  end

  defp client_loop(group, c, deadline, n) do
    if System.monotonic_time(:microsecond) >= deadline do
      n
    else
      {:ok, _} = Synod.Raft.command(group, {:put, {c, n}, n}, timeout: 30_000)
      client_loop(group, c, deadline, n + 1)
    end
  end

  @doc """
  Asserts that the hard-state records the member in `dir` made durable in its
  log.0 (Synod.Raft.Storage's record format), in order, never vote twice:
  terms never go down, and once a term has a vote, every later record of
  that term has the same vote.
  """
  def check_votes(dir) do
    Enum.reduce(hard_states(File.read!(Path.join(dir, "log.0"))), {0, 0}, fn {t, v}, {pt, pv} ->
      assert t >= pt, "#{dir}: term went from #{pt} to #{t}"
      if t == pt and pv != 0, do: assert(v == pv, "#{dir}: term #{t} voted #{pv}, then #{v}")
      {t, v}
    end)
  end

  defp hard_states(<<len::32, _crc::32, _hcrc::32, body::binary-size(len), rest::binary>>) do
    case body do
      <<1, t::64, v::64, _c::64>> -> [{t, v} | hard_states(rest)]
      _ -> hard_states(rest)
    end
  end

  defp hard_states(_torn_or_empty), do: []

  @doc """
  Whether `node`'s member of `group` has applied the leader's commit and
  holds a snapshot (its log no longer starts at 1): a wiped follower caught
  up through a snapshot.
  """
  def caught_up?(group, node, leader) do
    s = :erpc.call(node, Synod.Raft, :status, [group], 2_000)
    l = :erpc.call(leader, Synod.Raft, :status, [group], 2_000)
    s.applied >= l.commit and s.first_index > 1
  catch
    _, _ -> false
  end

  @doc """
  Polls until every node of `nodes` names a leader for each of `groups`:
  `:all`, or `{:not_all, counts per node}` once `deadline` (monotonic ms)
  has passed.
  """
  def wait_known(groups, nodes, deadline) do
    known = Enum.map(nodes, &elem(:erpc.call(&1, __MODULE__, :leaders_seen, [groups], 60_000), 0))

    cond do
      Enum.all?(known, &(&1 == length(groups))) -> :all
      System.monotonic_time(:millisecond) > deadline -> {:not_all, known}
      true -> Process.sleep(200) && wait_known(groups, nodes, deadline)
    end
  end
end
