defmodule Synod.ObsPageTest do
  # The status page in headless Chromium (Debian's `chromium`) against a
  # live 3-node cluster of :peer nodes running a store (a Raft group) and a
  # hub with children: the DOM, as Chromium built it from the page's script,
  # names every member and the leader, and a screenshot is written to
  # _build/test/artifacts/obs_status_page.png.
  use ExUnit.Case, async: false

  alias Synod.LocalCluster
  alias Synod.Test.{HubCase, Obs, RemoteHub}

  @moduletag timeout: 180_000
  @moduletag :chromium

  @chromium System.find_executable("chromium")
  unless @chromium do
    @moduletag skip:
                 "chromium is not installed: `scripts/setup.sh test` installs it (Debian package chromium)"
  end

  @artifacts Path.expand("../../_build/test/artifacts", __DIR__)

  test "the page shows every member, the leader, children per node, the store and elections" do
    peers = LocalCluster.start(3, prefix: "obsp")
    on_exit(fn -> LocalCluster.stop(peers) end)
    [a | _] = nodes = Enum.map(peers, &elem(&1, 1))
    dir = Path.join(System.tmp_dir!(), "synod-obs-page-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)

    # The observer (and its metrics) first: a sees the store's first leader.
    port = :erpc.call(a, Obs, :start_observer, [[port: 0]])

    store = :obs_page_store
    :ok = Synod.Store.start(store, nodes, dir)
    leader = Synod.Test.Raft.wait_leader(store, nodes)
    for i <- 1..20, do: {:ok, _, _} = :erpc.call(a, Synod.Store, :put, [store, "k#{i}", "v"])

    hub = :obs_page_hub
    HubCase.start_hubs(nodes, name: hub)

    {:ok, %{errors: []}} =
      :erpc.call(a, RemoteHub, :start_many, [hub, "c", 60, [timeout: 30_000]])

    # An election on a, after its metrics run: won, then left.
    :ok = :erpc.call(a, Obs, :election_cycle, [store, :obs_page_election, "page-cand"])
    on_a = length(:erpc.call(a, Synod, :children, [hub, :local]))

    dom = chromium(["--dump-dom", "--virtual-time-budget=3000", url(port)])
    File.mkdir_p!(@artifacts)
    File.write!(Path.join(@artifacts, "obs_status_page.html"), dom)

    # Every member, in the members' picture and in the group's.
    for n <- nodes do
      assert dom =~ ~s(data-node="#{n}"), "#{n} is not on the page"
      assert count(dom, ~s(data-node="#{n}")) >= 3
    end

    # The leader: the group names it, and its circle is drawn as the leader.
    assert dom =~ ~s(data-group="#{store}" data-leader="#{leader}")

    leader_circle = fn n ->
      ~r/class="member leader( self)?" data-node="#{Regex.escape(Atom.to_string(n))}"/
    end

    assert dom =~ leader_circle.(leader)
    for n <- nodes -- [leader], do: refute(dom =~ leader_circle.(n))

    # Children per node: one bar per member of the hub; the store's figures.
    for n <- nodes, do: assert(dom =~ ~s(class="bar" data-node="#{n}"))

    # a's children, as its registry counts them, on its bar.
    assert on_a > 0
    assert dom =~ ~s(class="bar" data-node="#{a}" data-value="#{on_a}")

    # The Raft leader change a saw (from none, or from an earlier leader
    # if an election was lost under load) to the leader, in the list.
    assert dom =~
             ~r/<li data-group="#{store}">[^<]*#{store}: [^<]+ → <b>#{Regex.escape(Atom.to_string(leader))}<\/b>/

    # The election: elected, then stepped down, newest first.
    assert [_, _] = Regex.scan(~r/<li class="election" data-election="obs_page_election"/, dom)

    assert dom =~
             ~r/data-election="obs_page_election" data-leader="">[^<]*obs_page_election: page-cand stepped down/

    assert dom =~ ~s(data-election="obs_page_election" data-leader="page-cand")
    for n <- nodes, do: assert(dom =~ ~s(class="share" data-node="#{n}"))
    assert dom =~ ~s(class="store" data-store="#{store}")
    assert dom =~ ~r/leads #{Regex.escape(Atom.to_string(store))}/

    shot = Path.join(@artifacts, "obs_status_page.png")
    File.rm(shot)

    chromium([
      "--screenshot=#{shot}",
      "--window-size=1280,900",
      "--virtual-time-budget=3000",
      url(port)
    ])

    assert File.stat!(shot).size > 10_000
  end

  defp url(port), do: "http://127.0.0.1:#{port}/"

  defp count(text, pattern), do: length(String.split(text, pattern)) - 1

  defp chromium(args) do
    profile = Path.join(System.tmp_dir!(), "synod-chromium-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(profile) end)

    # Its stderr (D-Bus complaints in a container) is dropped; the DOM is on stdout.
    {out, 0} =
      System.cmd(
        "sh",
        ["-c", ~s(exec "$0" "$@" 2>/dev/null), @chromium, "--headless", "--no-sandbox"] ++
          ["--disable-gpu", "--user-data-dir=#{profile}" | args]
      )

    out
  end
end
