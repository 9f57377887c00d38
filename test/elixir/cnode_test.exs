defmodule Synod.CNodeTest do
  # The real C node (priv/synod_cnode) on real epmd and real distribution.
  use ExUnit.Case, async: false

  alias Synod.CNode

  @moduletag :distributed
  @moduletag :tmp_dir
  @exe Path.expand("../../priv/synod_cnode", __DIR__)

  setup_all do
    Synod.LocalCluster.ensure_distributed()
    :ok
  end

  defp unique_name, do: :"synod_c#{System.unique_integer([:positive])}@127.0.0.1"

  # Under ExUnit's test supervisor, which stops it after the test.
  defp start_cnode(opts \\ []) do
    name = unique_name()
    spec = Supervisor.child_spec({CNode, Keyword.put(opts, :name, name)}, restart: :temporary)
    {start_supervised!(spec), name}
  end

  # Bounded polling (Synod.Test.Wait): raises if the condition is not met.
  defp wait_until(fun, timeout \\ 5_000), do: Synod.Test.Wait.until(fun, timeout)

  test "joins the cluster and answers net_adm:ping and GenServer calls" do
    {_pid, name} = start_cnode()
    assert Node.ping(name) == :pong
    assert name in Node.list(:hidden)
    assert GenServer.call({:synod_cnode, name}, :ping) == :pong
    assert GenServer.call({:synod_cnode, name}, :version) == {:ok, "0.1.0"}
    assert node() in GenServer.call({:synod_cnode, name}, :nodes)
  end

  test "unknown and malformed requests get errors while the node stays up" do
    {pid, name} = start_cnode()

    assert GenServer.call({:synod_cnode, name}, {:no, :such, :request}) ==
             {:error, {:bad_request, :unknown_request}}

    assert GenServer.call({:some_other_name, name}, :ping) ==
             {:error, {:bad_request, :unknown_request}}

    # not a call: no reply address, so a log line and nothing else
    send({:synod_cnode, name}, {:not, :a, :call})
    send({:synod_cnode, name}, :binary.copy("x", 2_000_000))
    assert GenServer.call({:synod_cnode, name}, :ping) == :pong
    assert wait_until(fn -> Enum.any?(CNode.output(pid), &(&1 =~ "not a GenServer call")) end)
    assert wait_until(fn -> Enum.any?(CNode.output(pid), &(&1 =~ "message too large")) end)
  end

  test "calls over its limits are answered with the reason, not dropped" do
    {_pid, name} = start_cnode()
    server = {:synod_cnode, name}

    big = {:children_start, :synod, [{"id", {M, :f, [:binary.copy("x", 1_100_000)]}, nil}], []}
    assert GenServer.call(server, big) == {:error, {:bad_request, :too_large}}

    deep = Enum.reduce(1..100, [], fn _, acc -> [acc] end)
    assert GenServer.call(server, {:ring_key, deep}) == {:error, {:bad_request, :too_deep}}

    # a call to its pid (where answers arrive, with a larger limit) is still a call
    assert GenServer.call(server, :ping) == :pong
  end

  test "a flood of junk leaves a bounded number of log lines and counts the rest" do
    {pid, name} = start_cnode()
    junk = 10_000
    for i <- 1..junk, do: send({:synod_cnode, name}, {:junk, i})
    assert GenServer.call({:synod_cnode, name}, :ping, 30_000) == :pong

    # every junk message is either logged or counted in a "suppressed" line
    accounted = fn ->
      lines = CNode.output(pid)
      logged = Enum.count(lines, &(&1 =~ "not a GenServer call"))

      held =
        for line <- lines,
            [_, n] <- [Regex.run(~r/suppressed (\d+) similar lines \(not_a_call\)/, line)],
            reduce: 0,
            do: (acc -> acc + String.to_integer(n))

      {logged, held, length(lines)}
    end

    assert wait_until(fn -> match?({l, h, _} when l + h == junk, accounted.()) end, 15_000)
    {logged, _held, total} = accounted.()
    # 5 lines per second per kind: a few seconds of flooding, not 10,000 lines
    assert logged < 100
    assert total < 200
  end

  test "stopping it ends the OS process and unregisters it from epmd" do
    {pid, name} = start_cnode()
    os_pid = CNode.os_pid(pid)
    assert File.exists?("/proc/#{os_pid}")
    :ok = stop_supervised(CNode.child_spec(name: name).id)
    refute Process.alive?(pid)
    assert wait_until(fn -> not File.exists?("/proc/#{os_pid}") end)
    [alive | _] = name |> Atom.to_string() |> String.split("@")

    assert wait_until(fn ->
             :erl_epmd.port_please(String.to_charlist(alive), {127, 0, 0, 1}) == :noport
           end)
  end

  test "it connects to --connect nodes and reconnects after they come back" do
    peer_name = ~c"reconnect_target_#{System.unique_integer([:positive])}"
    peer_opts = %{name: peer_name, host: ~c"127.0.0.1", longnames: true}
    {:ok, peer, target} = :peer.start(peer_opts)
    {_pid, name} = start_cnode(connect: [target])
    assert wait_until(fn -> name in :erpc.call(target, :erlang, :nodes, [:hidden]) end)

    :peer.stop(peer)
    {:ok, peer, ^target} = :peer.start(peer_opts)
    on_exit(fn -> :peer.stop(peer) end)
    assert wait_until(fn -> name in :erpc.call(target, :erlang, :nodes, [:hidden]) end, 10_000)
  end

  test "a node with the wrong cookie is refused" do
    {pid, name} = start_cnode()

    {:ok, peer, _} =
      :peer.start(%{
        name: ~c"wrong_cookie_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        connection: :standard_io,
        args: [~c"-setcookie", ~c"not_the_cookie"]
      })

    assert :peer.call(peer, :net_adm, :ping, [name]) == :pang
    :peer.stop(peer)

    assert wait_until(fn ->
             Enum.any?(CNode.output(pid), &(&1 =~ "refused an incoming connection"))
           end)

    assert Node.ping(name) == :pong
  end

  describe "the command line" do
    test "a cookie file readable by others is refused with exit code 77", %{tmp_dir: dir} do
      file = Path.join(dir, "cookie")
      File.write!(file, "secret_cookie_value")
      File.chmod!(file, 0o644)

      {out, status} =
        System.cmd(@exe, ["--name", "x@127.0.0.1", "--cookie-file", file], stderr_to_stdout: true)

      assert status == 77
      assert out =~ "accessible by group or others"
      refute out =~ "secret_cookie_value"
    end

    test "a symbolic link as cookie file is refused with exit code 77", %{tmp_dir: dir} do
      real = Path.join(dir, "real")
      File.write!(real, "c")
      File.chmod!(real, 0o600)
      File.ln_s!(real, Path.join(dir, "link"))

      {out, status} =
        System.cmd(@exe, ["--name", "x@127.0.0.1", "--cookie-file", Path.join(dir, "link")],
          stderr_to_stdout: true
        )

      assert status == 77
      assert out =~ "symbolic link"
    end

    test "usage errors exit with 64 and say why", %{tmp_dir: dir} do
      file = Path.join(dir, "cookie")
      File.write!(file, "c")
      File.chmod!(file, 0o600)

      for {args, message} <- [
            {["--cookie", "abc", "--name", "x@127.0.0.1"], "never taken from the command line"},
            {["--cookie-file", file], "--name is required"},
            {["--name", "x@127.0.0.1"], "--cookie-file is required"},
            {["--name", "no-at-sign", "--cookie-file", file], "ALIVE@IPV4"},
            {["--name", "x@localhost", "--cookie-file", file], "ALIVE@IPV4"},
            {["--name"], "missing its value"},
            {["--bogus"], "unknown option"},
            {["--name", "x@127.0.0.1", "--cookie-file", file, "--log-level", "loud"],
             "--log-level"}
          ] do
        {out, status} = System.cmd(@exe, args, stderr_to_stdout: true)
        assert status == 64, "#{inspect(args)} exited #{status}"
        assert out =~ message
      end

      {out, 0} = System.cmd(@exe, ["--help"])
      assert out =~ "--cookie-file"
      assert {"synod_cnode 0.1.0\n", 0} = System.cmd(@exe, ["--version"])
    end

    test "a missing cookie file exits with 66", %{tmp_dir: dir} do
      {out, 66} =
        System.cmd(@exe, ["--name", "x@127.0.0.1", "--cookie-file", Path.join(dir, "none")],
          stderr_to_stdout: true
        )

      assert out =~ "cannot open cookie file"
    end
  end

  test "Synod.CNode validates its options" do
    assert_raise ArgumentError, ~r/unknown option :colour/, fn ->
      CNode.start_link(name: :"a@127.0.0.1", colour: 1)
    end

    assert_raise ArgumentError, ~r/option :name/, fn -> CNode.start_link(name: :a@localhost) end

    assert_raise ArgumentError, ~r/option :connect/, fn ->
      CNode.start_link(name: :"a@127.0.0.1", connect: ["x"])
    end
  end

  @tag timeout: 120_000
  test "runs clean under valgrind: no errors, no leaks" do
    valgrind =
      System.find_executable("valgrind") ||
        flunk("valgrind is not installed (scripts/setup.sh installs it)")

    wrapper = [
      valgrind,
      "--error-exitcode=99",
      "--leak-check=full",
      "--errors-for-leak-kinds=definite,indirect"
    ]

    {pid, name} = start_cnode(wrapper: wrapper, ready_timeout: 60_000)
    ref = Process.monitor(pid)
    os_pid = CNode.os_pid(pid)

    assert GenServer.call({:synod_cnode, name}, :ping, 20_000) == :pong
    assert {:error, {:bad_request, _}} = GenServer.call({:synod_cnode, name}, {:junk}, 20_000)
    send({:synod_cnode, name}, :not_a_call)
    deep = Enum.reduce(1..100, [], fn _, acc -> [acc] end)

    assert {:error, {:bad_request, :too_deep}} =
             GenServer.call({:synod_cnode, name}, deep, 20_000)

    big = :binary.copy("x", 1_100_000)

    assert {:error, {:bad_request, :too_large}} =
             GenServer.call({:synod_cnode, name}, big, 20_000)

    assert GenServer.call({:synod_cnode, name}, :nodes, 20_000) |> is_list()

    # SIGTERM: the C node stops cleanly and valgrind reports with its exit code
    {_, 0} = System.cmd("kill", ["-TERM", to_string(os_pid)])
    assert_receive {:DOWN, ^ref, :process, ^pid, reason}, 60_000

    assert reason == {:shutdown, {:cnode_exited, 0}},
           "valgrind reported errors: #{inspect(reason)}"
  end
end
