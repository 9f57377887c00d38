defmodule Synod.LocalCluster do
  @moduledoc """
  Starts real BEAM nodes on this machine for demos and tests.

  The calling VM becomes a long-named node on 127.0.0.1 (if it is not one
  already) and starts peers with OTP's `:peer`. Each peer gets this VM's code
  path and cookie and runs with `-kernel prevent_overlapping_partitions false`,
  so a test can partition nodes without OTP 25's `global` cutting the
  controlling node off. Drive peers with `:erpc` over the distribution
  connection.

  `epmd` must be running first (`epmd -daemon`). The calling VM should itself
  be started with `-kernel prevent_overlapping_partitions false` (the
  scripts set it through `ERL_AFLAGS`): `global` reads that flag only at boot.

      peers = Synod.LocalCluster.start(3, prefix: "demo")
      nodes = Enum.map(peers, &elem(&1, 1))
      :erpc.multicall(nodes, Node, :self, [])
      Synod.LocalCluster.stop(peers)

  Functions sent to a peer as closures must come from compiled modules: a
  module defined in an `.exs` script exists only in the VM that ran it.
  """

  @doc "Makes this VM a distributed, long-named node on 127.0.0.1 unless it is one."
  @spec ensure_distributed() :: node()
  def ensure_distributed do
    unless Node.alive?() do
      name = :"synod_#{System.pid()}_#{System.unique_integer([:positive])}@127.0.0.1"

      case :net_kernel.start([name, :longnames]) do
        {:ok, _} ->
          :ok

        {:error, reason} ->
          raise "cannot start distribution (is epmd running?): #{inspect(reason)}"
      end
    end

    node()
  end

  @doc """
  Starts `count` peer nodes and returns `[{peer_pid, node}]`.

  Options:
    * `:prefix` — node name prefix (default `"peer"`); names get a random suffix
    * `:apps` — applications to start on every peer (default `[:synod]`)
    * `:names` — exact node names (without host) instead of random ones,
      e.g. to restart a node that was stopped or killed; `count` must equal
      their number
    * `:env` — environment variables for the peers' OS processes, as
      `[{"NAME", "value"}]` (default none)
    * `:raft_log` — `:wal` boots every peer with `config :synod, raft_log:
      :wal` and its own WAL directory (`<tmp>/synod-peer-wal/<name>`, so a
      peer restarted under its name finds its WAL); default: `:wal` when the
      OS environment has `SYNOD_TEST_RAFT_LOG=wal` (to run a suite on the
      shared WAL), else the application's default (`:files`)

  Peers are not linked to the caller; stop them with `stop/1`.
  """
  @spec start(pos_integer(), keyword()) :: [{pid(), node()}]
  def start(count, opts \\ []) when is_integer(count) and count > 0 do
    ensure_distributed()
    prefix = opts |> Keyword.get(:prefix, "peer") |> to_charlist()
    apps = Keyword.get(opts, :apps, [:synod])
    cookie = Atom.to_charlist(Node.get_cookie())
    env = for {k, v} <- Keyword.get(opts, :env, []), do: {to_charlist(k), to_charlist(v)}
    default_log = if System.get_env("SYNOD_TEST_RAFT_LOG") == "wal", do: :wal
    raft_log = Keyword.get(opts, :raft_log, default_log)

    names =
      case Keyword.fetch(opts, :names) do
        {:ok, names} when length(names) == count -> Enum.map(names, &to_charlist/1)
        {:ok, _} -> raise ArgumentError, ":names must hold exactly count names"
        :error -> for _ <- 1..count, do: :peer.random_name(prefix)
      end

    for name <- names do
      {:ok, pid, node} =
        :peer.start(%{
          name: name,
          host: ~c"127.0.0.1",
          longnames: true,
          env: env,
          args: [
            ~c"-setcookie",
            cookie,
            ~c"-kernel",
            ~c"prevent_overlapping_partitions",
            ~c"false"
            | wal_args(raft_log, name)
          ]
        })

      :ok = :erpc.call(node, :code, :add_paths, [:code.get_path()])
      for app <- apps, do: {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [app])
      {pid, node}
    end
  end

  defp wal_args(:wal, name) do
    dir = Path.join([System.tmp_dir!(), "synod-peer-wal", to_string(name)])
    # (an Erlang binary on the command line: <<"...">>)
    dir = to_charlist("<<#{inspect(dir)}>>")
    [~c"-synod", ~c"raft_log", ~c"wal", ~c"-synod", ~c"wal_dir", dir]
  end

  defp wal_args(_log, _name), do: []

  @doc """
  Kills a peer's VM at once (`kill -9` of its OS process), as a crash would:
  nothing is flushed, no `terminate/2` runs.
  """
  @spec kill(node()) :: :ok
  def kill(node) do
    os_pid = :erpc.call(node, :os, :getpid, [])
    {_, 0} = System.cmd("kill", ["-9", to_string(os_pid)])
    :ok
  end

  @doc """
  Cuts every node of `side_a` from every node of `side_b` (this VM stays
  connected to all): each side sets a wrong cookie for the other — two
  different wrong cookies, since one shared wrong cookie still handshakes —
  and disconnects. Reconnection is refused until `heal/2`.
  """
  @spec partition([node()], [node()]) :: :ok
  def partition(side_a, side_b) do
    cut = fn from, others, cookie ->
      :erpc.call(from, fn ->
        for other <- others do
          :erlang.set_cookie(other, cookie)
          :erlang.disconnect_node(other)
        end
      end)
    end

    for a <- side_a, do: cut.(a, side_b, :synod_cut_a)
    for b <- side_b, do: cut.(b, side_a, :synod_cut_b)
    :ok
  end

  @doc "Undoes `partition/2`: real cookies back, and the sides reconnected."
  @spec heal([node()], [node()]) :: :ok
  def heal(side_a, side_b) do
    cookie = Node.get_cookie()

    for {from, others} <- Enum.map(side_a, &{&1, side_b}) ++ Enum.map(side_b, &{&1, side_a}) do
      :erpc.call(from, fn -> for other <- others, do: :erlang.set_cookie(other, cookie) end)
    end

    for a <- side_a, b <- side_b, do: reconnect(a, b, 50)
    :ok
  end

  # A connection attempt made while the cut cookies were in place can still
  # be in flight when the cookies are restored, and then Node.connect/1
  # answers false once: try again, for up to 5 s.
  defp reconnect(a, b, tries) do
    cond do
      :erpc.call(a, Node, :connect, [b]) ->
        :ok

      tries > 1 ->
        Process.sleep(100)
        reconnect(a, b, tries - 1)

      true ->
        raise "LocalCluster.heal: #{a} cannot reconnect to #{b}"
    end
  end

  @doc "Stops peers started by `start/2`; peers that are already gone are skipped."
  @spec stop([{pid(), node()}]) :: :ok
  def stop(peers) do
    for {pid, _node} <- peers do
      try do
        :peer.stop(pid)
      catch
        :exit, _ -> :already_stopped
      end
    end

    :ok
  end
end
