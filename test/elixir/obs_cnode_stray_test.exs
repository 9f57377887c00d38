defmodule Synod.ObsCNodeStrayTest do
  # The house rule in Synod.CNode (the Elixir process that owns the real C
  # node's port): an unknown call, from this node or from a :peer node, is
  # answered {:error, {:bad_request, request}}; unknown casts and messages
  # are dropped with Synod.Stray's rate-limited log; the process and its C
  # node stay up and still answer what they know.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Synod.CNode

  @moduletag :distributed
  @moduletag timeout: 60_000

  setup_all do
    Synod.LocalCluster.ensure_distributed()
    :ok
  end

  test "unknown calls get bad_request, casts and messages are dropped with one log a second" do
    name = :"synod_cs#{System.unique_integer([:positive])}@127.0.0.1"
    spec = Supervisor.child_spec({CNode, name: name}, restart: :temporary)
    pid = start_supervised!(spec)
    os_pid = CNode.os_pid(pid)
    assert is_integer(os_pid)

    assert GenServer.call(pid, {:no, :such, :call}) ==
             {:error, {:bad_request, {:no, :such, :call}}}

    assert GenServer.call(pid, :ping) == {:error, {:bad_request, :ping}}

    # From another node, too.
    [{peer, other}] = Synod.LocalCluster.start(1, prefix: "obscs")
    on_exit(fn -> Synod.LocalCluster.stop([{peer, other}]) end)

    assert :erpc.call(other, GenServer, :call, [pid, {:junk, self()}]) ==
             {:error, {:bad_request, {:junk, self()}}}

    # A call whose from is no {pid, tag}: dropped, not a crash in reply.
    send(pid, {:"$gen_call", :not_a_from, :os_pid})

    # The calls above were reported (once, then counted): a second later
    # the next dropped input is reported again.
    Process.sleep(1_100)

    log =
      capture_log(fn ->
        for i <- 1..50 do
          GenServer.cast(pid, {:junk_cast, i})
          send(pid, {:junk_message, i})
        end

        :erpc.call(other, GenServer, :cast, [pid, :remote_junk])
        # A call after them: they have all been handled when it returns.
        assert CNode.os_pid(pid) == os_pid
      end)

    warnings = log |> String.split("\n") |> Enum.filter(&(&1 =~ "Synod.CNode ignored a"))
    # 101 dropped inputs within well under a second: one line (two if the
    # second boundary fell in between), not a hundred.
    assert length(warnings) in 1..2, log

    assert hd(warnings) =~
             ~r/ignored a cast: \{:junk_cast, 1\} \(and \d+ more since the last report\)/

    assert Process.alive?(pid)
    assert Node.ping(name) == :pong
    assert GenServer.call({:synod_cnode, name}, :ping) == :pong
    assert is_list(CNode.output(pid))

    # The next report, a second later, says how many were dropped.
    Process.sleep(1_100)

    log = capture_log(fn -> GenServer.call(pid, :again) end)
    assert log =~ ~r/Synod.CNode ignored a call: :again \(and \d+ more since the last report\)/
  end
end
