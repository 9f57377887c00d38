defmodule Synod.CNode do
  @moduledoc """
  Runs Synod's C node (`priv/synod_cnode`) as a supervised OS process.

  The C node is a native program built on erl_interface. It joins the cluster
  as a hidden node and answers `GenServer.call/3` requests (see
  `docs/cnode.md`). This module starts it, hands it the cookie through a
  private file (never on the command line), waits until a distribution
  handshake with it succeeds, and stops it when the owning process stops.

      {:ok, pid} = Synod.CNode.start_link(name: :"synod_c@127.0.0.1")
      :pong = Node.ping(:"synod_c@127.0.0.1")
      :pong = GenServer.call({:synod_cnode, :"synod_c@127.0.0.1"}, :ping)

  Joined to a hub's members (`hub:` and `connect:`), it does the
  dispatcher's work: it learns the members, places children with the same C
  ring the NIF uses, and answers `children_start`, `children_stop`,
  `propagate_event` and `dispatch_event` calls:

      {:ok, _} = Synod.CNode.start_link(name: :"synod_c@127.0.0.1", hub: :my_hub, connect: [:"a@127.0.0.1"])
      GenServer.call({:synod_cnode, :"synod_c@127.0.0.1"},
        {:children_start, :my_hub, [{"job-1", {MyWorker, :start_link, []}, nil}], []})
      #=> {:ok, [{"job-1", :"a@127.0.0.1", {:ok, #PID<...>}}]}

  The calls, their options, answers and limits are in `docs/cnode.md`.

  The calling VM must be a distributed node, and `epmd` must be running.

  ## Options

    * `:name` (required): the C node's full long name, `alive@ipv4`
    * `:cookie`: the cookie to give it (default: this node's cookie)
    * `:connect`: nodes it should connect to and keep connected (default `[]`)
    * `:hub`: the hub it serves (default `:synod`)
    * `:server`: the registered name its calls go to (default `:synod_cnode`)
    * `:log_level`: `:error | :warn | :info | :debug` (default `:info`). Its
      stderr lines are logged here at debug level.
    * `:ready_timeout`: milliseconds to wait for the first handshake (default 5000)
    * `:executable`: the program to run (default `priv/synod_cnode`)
    * `:wrapper`: a command and arguments to run the program under, for
      example `["valgrind", "--error-exitcode=99"]` (default `[]`)
    * `:witness`: Raft groups (atoms) to join as a witness (default `[]`;
      docs/cnode.md "Witness"); needs `:data_dir`
    * `:data_dir`: the witness's data directory
    * `:raft_tick_ms`, `:election_tick`: the groups' `tick_ms` and
      `election_tick` (defaults 25 and 10, as `Synod.Raft`'s)
  """
  use GenServer
  require Logger

  alias Synod.Stray
  alias Synod.Telemetry.Emit

  @options [
    :name,
    :cookie,
    :connect,
    :hub,
    :server,
    :log_level,
    :ready_timeout,
    :executable,
    :wrapper,
    :witness,
    :data_dir,
    :raft_tick_ms,
    :election_tick
  ]

  @doc "Starts the C node and returns once it has joined (answers a ping)."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    opts = validate!(opts)
    GenServer.start_link(__MODULE__, opts)
  end

  @doc "Stops the C node (it exits cleanly when its standard input closes)."
  @spec stop(GenServer.server()) :: :ok
  def stop(server), do: GenServer.stop(server)

  @doc "The OS process id of the running C node."
  @spec os_pid(GenServer.server()) :: non_neg_integer()
  def os_pid(server), do: GenServer.call(server, :os_pid)

  @doc "Every line the C node has written to stderr so far, oldest first."
  @spec output(GenServer.server()) :: [String.t()]
  def output(server), do: GenServer.call(server, :output)

  @doc """
  Sends `request` to the C node `cnode` (a `GenServer.call/3` to its
  `server`, default `:synod_cnode`) and emits `[:synod, :cnode, :request]`
  with the request's kind (its first element, or the atom itself) and
  `count`: the children of a `children_start` / `children_stop`, else 1.
  Exits as `GenServer.call/3` does when the C node does not answer in time.
  """
  @spec call(node(), term(), timeout(), atom()) :: term()
  def call(cnode, request, timeout \\ 5_000, server \\ :synod_cnode) when is_atom(cnode) do
    {kind, count} =
      case request do
        {kind, _hub, items, _opts}
        when kind in [:children_start, :children_stop] and is_list(items) ->
          {kind, length(items)}

        tuple when is_tuple(tuple) and tuple_size(tuple) > 0 and is_atom(elem(tuple, 0)) ->
          {elem(tuple, 0), 1}

        atom when is_atom(atom) ->
          {atom, 1}

        _ ->
          {:other, 1}
      end

    Emit.cnode_request(cnode, kind, count)
    GenServer.call({server, cnode}, request, timeout)
  end

  @doc false
  def child_spec(opts) do
    %{id: {__MODULE__, Keyword.fetch!(opts, :name)}, start: {__MODULE__, :start_link, [opts]}}
  end

  defp validate!(opts) do
    unless Keyword.keyword?(opts), do: raise(ArgumentError, "options must be a keyword list")

    for {key, _} <- opts, key not in @options do
      raise ArgumentError, "unknown option #{inspect(key)}"
    end

    name = Keyword.get(opts, :name)

    unless is_atom(name) and name != nil and
             Atom.to_string(name) =~ ~r/^[^@]+@\d+\.\d+\.\d+\.\d+$/ do
      raise ArgumentError,
            "option :name must be an atom like :\"synod_c@127.0.0.1\", got: #{inspect(name)}"
    end

    connect = Keyword.get(opts, :connect, [])

    unless is_list(connect) and Enum.all?(connect, &is_atom/1) do
      raise ArgumentError, "option :connect must be a list of node names"
    end

    witness = Keyword.get(opts, :witness, [])

    unless is_list(witness) and Enum.all?(witness, &is_atom/1) and
             (witness == [] or is_binary(Keyword.get(opts, :data_dir))) do
      raise ArgumentError, "option :witness must be a list of group names, with :data_dir"
    end

    level = Keyword.get(opts, :log_level, :info)

    unless level in [:error, :warn, :info, :debug] do
      raise ArgumentError, "option :log_level must be :error, :warn, :info or :debug"
    end

    Keyword.merge(
      [
        cookie: Node.get_cookie(),
        connect: [],
        hub: :synod,
        server: :synod_cnode,
        log_level: :info,
        ready_timeout: 5_000,
        executable: Application.app_dir(:synod, "priv/synod_cnode"),
        wrapper: [],
        witness: [],
        data_dir: nil,
        raft_tick_ms: 25,
        election_tick: 10
      ],
      opts
    )
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    unless Node.alive?() do
      {:stop, :not_distributed}
    else
      start_program(opts)
    end
  end

  defp start_program(opts) do
    dir = Path.join(System.tmp_dir!(), "synod_cnode_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    File.chmod!(dir, 0o700)
    cookie_file = Path.join(dir, "cookie")
    File.write!(cookie_file, Atom.to_string(opts[:cookie]))
    File.chmod!(cookie_file, 0o600)

    args =
      ["--name", Atom.to_string(opts[:name]), "--cookie-file", cookie_file, "--watch-stdin"] ++
        ["--hub", Atom.to_string(opts[:hub]), "--server", Atom.to_string(opts[:server])] ++
        ["--log-level", Atom.to_string(opts[:log_level])] ++
        Enum.flat_map(opts[:connect], &["--connect", Atom.to_string(&1)]) ++
        witness_args(opts)

    {program, args} =
      case opts[:wrapper] do
        [] ->
          {opts[:executable], args}

        [wrapper | wrapper_args] ->
          {System.find_executable(wrapper), wrapper_args ++ [opts[:executable] | args]}
      end

    port =
      Port.open({:spawn_executable, program}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 4096},
        args: args
      ])

    deadline = System.monotonic_time(:millisecond) + opts[:ready_timeout]
    result = await_ready(port, opts[:name], deadline, [])
    File.rm_rf!(dir)

    case result do
      {:ok, output} ->
        Node.monitor(opts[:name], true)
        Emit.cnode_connection(opts[:name], :up)
        {:ok, %{port: port, name: opts[:name], output: output, up: true}}

      {:error, reason} ->
        {:stop, reason}
    end
  end

  defp witness_args(opts) do
    case opts[:witness] do
      [] ->
        []

      groups ->
        ["--data-dir", opts[:data_dir]] ++
          [
            "--raft-tick-ms",
            "#{opts[:raft_tick_ms]}",
            "--election-tick",
            "#{opts[:election_tick]}"
          ] ++
          Enum.flat_map(groups, &["--witness", Atom.to_string(&1)])
    end
  end

  # Ready when a distribution handshake with it succeeds.
  defp await_ready(port, name, deadline, output) do
    receive do
      {^port, {:data, {_, line}}} ->
        await_ready(port, name, deadline, [line | output])

      {^port, {:exit_status, status}} ->
        {:error, {:cnode_exited, status, Enum.reverse(output)}}
    after
      20 ->
        cond do
          Node.ping(name) == :pong ->
            {:ok, output}

          System.monotonic_time(:millisecond) > deadline ->
            Port.close(port)
            {:error, {:cnode_not_ready, Enum.reverse(output)}}

          true ->
            await_ready(port, name, deadline, output)
        end
    end
  end

  # The house rule (Synod.Stray): an unknown call is answered
  # {:error, {:bad_request, request}}, an unknown cast or message dropped
  # with a rate-limited log; nothing sent to this process crashes it.
  @who "Synod.CNode"
  @calls [:os_pid, :output]

  @impl true
  def handle_call(request, from, state),
    do: Stray.call(request, from, state, @who, request in @calls, &known_call/3)

  defp known_call(:os_pid, _from, state), do: {:reply, Port.info(state.port)[:os_pid], state}
  defp known_call(:output, _from, state), do: {:reply, Enum.reverse(state.output), state}

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, @who)

  @impl true
  def handle_info({port, {:data, {_, line}}}, %{port: port} = state) do
    Logger.debug("synod_cnode: " <> line)
    {:noreply, %{state | output: [line | state.output]}}
  end

  # A clean exit (status 0, e.g. after a SIGTERM) is a shutdown, not a crash.
  def handle_info({port, {:exit_status, 0}}, %{port: port} = state),
    do: {:stop, {:shutdown, {:cnode_exited, 0}}, state}

  def handle_info({port, {:exit_status, status}}, %{port: port} = state),
    do: {:stop, {:cnode_exited, status}, state}

  def handle_info({:EXIT, port, reason}, %{port: port} = state), do: {:stop, reason, state}

  # The distribution connection went away (and comes back when it pings us
  # or we it): observers see both.
  def handle_info({:nodedown, name}, %{name: name} = state) do
    Emit.cnode_connection(name, :down)
    Process.send_after(self(), :reconnect, 100)
    {:noreply, %{state | up: false}}
  end

  def handle_info(:reconnect, %{up: false, name: name} = state) do
    if Node.ping(name) == :pong do
      Node.monitor(name, true)
      Emit.cnode_connection(name, :up)
      {:noreply, %{state | up: true}}
    else
      Process.send_after(self(), :reconnect, 1_000)
      {:noreply, state}
    end
  end

  # A reconnect timer that fires after the connection came back by itself.
  def handle_info(:reconnect, state), do: {:noreply, state}

  def handle_info(other, state) do
    Stray.ignored(@who, :message, other)
    {:noreply, state}
  end

  @impl true
  def terminate(_reason, %{port: port} = state) do
    if state.up, do: Emit.cnode_connection(state.name, :down)
    # Closing the port closes the C node's stdin; with --watch-stdin it stops.
    if Port.info(port), do: Port.close(port)
    :ok
  catch
    :error, :badarg -> :ok
  end
end
