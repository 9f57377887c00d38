defmodule Synod.ObsHttpTest do
  # Synod.Observer over real HTTP (:httpc): /metrics parsed by a text-format
  # checker (test/support/obs_helpers.ex) that is itself shown to reject bad
  # input, /status.json, the bearer token, the read-only rule; and
  # Synod.status/1 staying bounded when a process it asks is stuck.
  use ExUnit.Case, async: false

  alias Synod.Test.{Obs, PromChecker}

  @moduletag timeout: 60_000

  setup do
    Synod.LocalCluster.ensure_distributed()
    :ok
  end

  defp observer(opts) do
    {:ok, pid} = Synod.Observer.start_link([port: 0] ++ opts)
    # Not linked: stopped here, after the test process has exited.
    Process.unlink(pid)
    on_exit(fn -> Synod.Observer.stop(pid) end)
    Synod.Observer.port(pid)
  end

  describe "the checker" do
    @good """
    # HELP a_total A counter.
    # TYPE a_total counter
    a_total{x="q\\"uote\\\\back\\nline"} 3
    # HELP h A histogram.
    # TYPE h histogram
    h_bucket{le="0.1"} 1
    h_bucket{le="1.0"} 2
    h_bucket{le="+Inf"} 2
    h_sum 0.5
    h_count 2
    """

    test "accepts good text and unescapes label values" do
      assert {:ok, samples} = PromChecker.check(@good)
      assert {"a_total", %{"x" => "q\"uote\\back\nline"}, 3.0} in samples
    end

    for {what, bad} <- [
          {"a sample without TYPE", "# HELP x X.\nx 1\n"},
          {"a bad metric name", "# HELP 1x X.\n# TYPE 1x gauge\n1x 1\n"},
          {"a bad TYPE", "# HELP x X.\n# TYPE x thing\nx 1\n"},
          {"TYPE before HELP", "# TYPE x gauge\n# HELP x X.\nx 1\n"},
          {"two TYPE lines", "# HELP x X.\n# TYPE x gauge\n# TYPE x gauge\nx 1\n"},
          {"an unquoted label", "# HELP x X.\n# TYPE x gauge\nx{a=b} 1\n"},
          {"a bad escape", "# HELP x X.\n# TYPE x gauge\nx{a=\"\\q\"} 1\n"},
          {"a bad value", "# HELP x X.\n# TYPE x gauge\nx one\n"},
          {"a negative counter", "# HELP x X.\n# TYPE x counter\nx -1\n"},
          {"a sample of another family", "# HELP x X.\n# TYPE x gauge\ny 1\n"},
          {"buckets out of order",
           "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"},
          {"no +Inf bucket",
           "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_sum 1\nh_count 1\n"},
          {"decreasing counts",
           "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"},
          {"a _count unlike +Inf",
           "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n"},
          {"no _sum", "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n"}
        ] do
      test "rejects #{what}" do
        assert {:error, [_ | _]} = PromChecker.check(unquote(bad))
      end
    end
  end

  describe "the JSON encoder" do
    alias Synod.Observer.JSON

    test "encodes maps, lists, tuples, atoms and numbers; escapes strings" do
      json =
        IO.iodata_to_binary(
          JSON.encode(%{"c" => %{}, a: [1, 2.5, nil, true], b: {:x, "q\"\\\n</script>"}})
        )

      assert json ==
               ~s({"a":[1,2.5,null,true],"b":["x","q\\"\\\\\\n\\u003C/script\\u003E"],"c":{}})
    end

    test "never fails on a term JSON has no word for" do
      json = IO.iodata_to_binary(JSON.encode(%{self() => make_ref(), bin: <<255>>}))
      # Inspected, with < and > escaped (the document is embedded in a page).
      assert json =~ ~s("#PID\\u003C)
      assert json =~ ~s("bin":"\\u003C\\u003C255\\u003E\\u003E")
    end
  end

  test "a real scrape of /metrics: every family, valid text, escaped labels" do
    port = observer([])
    :ok = Synod.Metrics.reset()
    weird = :"we\"ird\\store\nx"
    ms = System.convert_time_unit(1, :millisecond, :native)
    me = node()
    t = &Synod.Telemetry.execute/3

    # The hub's and coordination's events as their modules emit them.
    t.([:synod, :hub, :children, :started], %{count: 5}, %{hub: :h, node: me})
    t.([:synod, :hub, :children, :stopped], %{count: 2}, %{hub: :h, node: me})
    # A peer's starts and stops, as every member reports them: not this node's.
    t.([:synod, :hub, :children, :started], %{count: 9}, %{hub: :h, node: :"b@127.0.0.1"})
    t.([:synod, :hub, :children, :stopped], %{count: 9}, %{hub: :h, node: :"b@127.0.0.1"})

    t.([:synod, :hub, :children, :migrated], %{count: 3}, %{hub: :h, from: me, to: :"b@127.0.0.1"})

    t.([:synod, :hub, :redistribution, :stop], %{duration: 7 * ms, moved: 3}, %{
      hub: :h,
      node: me,
      reason: {:joined, :"b@127.0.0.1"}
    })

    t.([:synod, :hub, :partition], %{members: 2}, %{hub: :h, node: me, state: :partitioned})
    t.([:synod, :lock, :acquired], %{wait: 2 * ms}, %{store: weird, key: "k", token: 1})

    t.([:synod, :lock, :released], %{hold: 30 * ms}, %{
      store: weird,
      key: "k",
      token: 1,
      result: :ok
    })

    t.([:synod, :election, :leader], %{}, %{store: :s, election: :e, leader: "c1", previous: nil})
    # Its step down: the same change seen from the other side, not counted.
    t.([:synod, :election, :leader], %{}, %{store: :s, election: :e, leader: nil, previous: "c1"})
    t.([:synod, :queue, :depth], %{depth: 4}, %{store: :s, queue: :q})
    t.([:synod, :tasks, :transition], %{}, %{store: :s, task: "t", from: nil, to: :starting})
    t.([:synod, :cnode, :connection], %{}, %{node: :"c@127.0.0.1", state: :up})
    t.([:synod, :cnode, :request], %{count: 10}, %{node: :"c@127.0.0.1", kind: :children_start})

    # And real ones: a Raft group and a store on this node.
    dir = Path.join(System.tmp_dir!(), "synod-obs-http-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    store = :"obs_h#{System.unique_integer([:positive])}"
    :ok = Synod.Store.start(store, [me], dir)
    on_exit(fn -> Synod.Store.stop_member(store) end)
    Synod.Test.Raft.wait_leader(store, [me])
    for i <- 1..5, do: {:ok, _, _} = Synod.Store.put(store, "k#{i}", "v")

    {200, headers, body} = Obs.get(port, "/metrics")
    assert headers["content-type"] =~ "text/plain; version=0.0.4"
    assert {:ok, samples} = PromChecker.check(body), body

    value = fn name, labels ->
      for {^name, l, v} <- samples, Map.take(l, Map.keys(labels)) == labels, do: v
    end

    assert value.("synod_hub_children_started_total", %{"hub" => "h"}) == [5.0]
    assert value.("synod_hub_children_stopped_total", %{"hub" => "h"}) == [2.0]
    refute body =~ ~s(node="b@127.0.0.1"} 9)
    assert value.("synod_hub_children_migrated_total", %{"to" => "b@127.0.0.1"}) == [3.0]

    assert value.("synod_hub_redistribution_duration_seconds_count", %{"reason" => "joined"}) ==
             [1.0]

    assert value.("synod_hub_redistribution_duration_seconds_bucket", %{"le" => "0.005"}) == [0.0]
    assert value.("synod_hub_redistribution_duration_seconds_bucket", %{"le" => "0.01"}) == [1.0]
    assert value.("synod_hub_partitioned", %{"hub" => "h"}) == [1.0]
    # The label value came back byte for byte through the escaping.
    assert value.("synod_lock_wait_seconds_count", %{"store" => Atom.to_string(weird)}) == [1.0]
    assert value.("synod_lock_hold_seconds_count", %{"result" => "ok"}) == [1.0]
    assert value.("synod_election_leader_changes_total", %{"election" => "e"}) == [1.0]
    assert value.("synod_queue_depth", %{"queue" => "q"}) == [4.0]

    assert value.("synod_tasks_transitions_total", %{"from" => "none", "to" => "starting"}) ==
             [1.0]

    assert value.("synod_cnode_connected", %{"node" => "c@127.0.0.1"}) == [1.0]
    assert value.("synod_cnode_requests_total", %{"kind" => "children_start"}) == [10.0]
    s = Atom.to_string(store)

    assert [puts] =
             value.("synod_store_request_duration_seconds_count", %{"store" => s, "kind" => "put"})

    assert puts == 5.0
    assert value.("synod_raft_is_leader", %{"group" => s}) == [1.0]
    assert [n] = value.("synod_raft_fsync_duration_seconds_count", %{"group" => s})
    assert n >= 5
    assert [c] = value.("synod_raft_commit_latency_seconds_count", %{"group" => s})
    assert c >= 5

    # The raw text carries the escapes.
    assert body =~ ~s(store="we\\"ird\\\\store\\nx")
  end

  test "/status.json and the page; only GET and HEAD; unknown paths 404" do
    port = observer([])
    {200, headers, body} = Obs.get(port, "/status.json")
    assert headers["content-type"] == "application/json"
    assert body =~ ~s("node":"#{node()}")
    {200, headers, page} = Obs.get(port, "/")
    assert headers["content-type"] =~ "text/html"
    assert page =~ "<svg" or page =~ "synod-initial"
    refute page =~ ~r/<(script|link|img)[^>]+(src|href)=/
    {405, _, _} = Obs.request(:post, port, "/metrics")
    {404, _, _} = Obs.get(port, "/nothing")
  end

  test "with a token: missing or wrong is 401, right is 200" do
    token = "s3cret-token-0123456789"
    port = observer(token: token)

    for path <- ["/metrics", "/status.json", "/"] do
      assert {401, headers, _} = Obs.get(port, path)
      assert headers["www-authenticate"] =~ "Bearer"

      assert {401, _, _} =
               Obs.get(port, path, [{"authorization", "Bearer wrong-token-0123456789"}])

      assert {401, _, _} = Obs.get(port, path, [{"authorization", "Bearer " <> token <> "x"}])
      assert {401, _, _} = Obs.get(port, path, [{"authorization", token}])
      assert {200, _, _} = Obs.get(port, path, [{"authorization", "Bearer " <> token}])
    end

    assert {405, _, _} =
             Obs.request(:post, port, "/metrics", [{"authorization", "Bearer " <> token}])
  end

  test "application env gives the defaults; options given override them" do
    Application.put_env(:synod, Synod.Observer, port: 0, token: String.duplicate("t", 20))
    on_exit(fn -> Application.delete_env(:synod, Synod.Observer) end)
    port = observer([])
    assert {401, _, _} = Obs.get(port, "/metrics")

    assert {200, _, _} =
             Obs.get(port, "/metrics", [{"authorization", "Bearer " <> String.duplicate("t", 20)}])

    open = observer(token: nil)
    assert {200, _, _} = Obs.get(open, "/metrics")
  end

  test "options are checked: bad ones are named" do
    assert_raise ArgumentError, ~r/port/, fn -> Synod.Observer.start_link(port: -1) end
    assert_raise ArgumentError, ~r/token/, fn -> Synod.Observer.start_link(token: "short") end
    assert_raise ArgumentError, ~r/ip/, fn -> Synod.Observer.start_link(ip: "0.0.0.0") end
    assert_raise ArgumentError, ~r/unknown option/, fn -> Synod.Observer.start_link(bind: 1) end
  end

  test "Synod.status/1 answers with an error for a member that is stuck, and the rest" do
    dir = Path.join(System.tmp_dir!(), "synod-obs-st-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    me = node()
    [a, b] = for _ <- 1..2, do: :"obs_g#{System.unique_integer([:positive])}"

    for g <- [a, b] do
      :ok = Synod.Raft.start_group(g, [me], dir <> "/#{g}", machine: Synod.Raft.KV)
      on_exit(fn -> Synod.Raft.stop_member(g) end)
      Synod.Test.Raft.wait_leader(g, [me])
    end

    member = Process.whereis(Synod.Raft.member_name(a))
    :ok = :sys.suspend(member)
    on_exit(fn -> if Process.alive?(member), do: :sys.resume(member) end)

    st = Synod.status(timeout: 300)
    assert %{error: :timeout} = st.groups[a]
    assert %{role: :leader, leader: ^me, voters: [^me]} = st.groups[b]
    :sys.resume(member)
    assert %{role: :leader} = Synod.status().groups[a]
    assert %{role: :leader} = :synod.status().groups[a]
  end
end
