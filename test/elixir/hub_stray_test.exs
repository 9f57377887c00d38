defmodule Synod.HubStrayTest do
  # Stray input (docs/hub.md, "Stray input"): 10,000 random terms — calls,
  # casts, plain messages, and malformed versions of every message of
  # docs/protocol.md — sent from another node (this VM) to a hub on a real
  # peer that holds children. The hub's processes stay up, answer unknown
  # calls with {:error, {:bad_request, _}}, and no child changes pid.
  use ExUnit.Case, async: false

  import Synod.Test.HubCase
  alias Synod.Test.RemoteHub
  alias Synod.HubStrayTest.Gen

  @moduletag :distributed
  @moduletag timeout: 120_000

  @hub :hub_stray
  @terms 10_000

  setup_all do
    nodes = Synod.Test.Cluster.peers!(2, prefix: "stray")
    start_hubs(nodes, name: @hub)
    {:ok, _} = :erpc.call(hd(nodes), RemoteHub, :start_many, [@hub, "s", 200])
    await_placement(nodes, @hub, RemoteHub.ids("s", 200))
    %{nodes: nodes}
  end

  # What runs on each node, by the processes themselves: {hub processes, id => pid}.
  defp snapshot(nodes) do
    for n <- nodes, into: %{} do
      procs = :erpc.call(n, Process, :whereis, [@hub])
      children = :erpc.call(n, Process, :whereis, [:"#{@hub}.children"])

      pids =
        :erpc.call(n, DynamicSupervisor, :which_children, [:"#{@hub}.children"])
        |> Enum.map(fn {_, pid, _, _} -> pid end)
        |> Enum.sort()

      {n, {procs, children, pids}}
    end
  end

  test "10,000 random and malformed terms: the hub stays up and no child changes pid", %{
    nodes: [a, _] = nodes
  } do
    seed = :erlang.phash2(make_ref())
    :rand.seed(:exsss, {seed, 17, 42})
    IO.puts("hub stray-input test: rand seed #{seed}")
    before = snapshot(nodes)
    assert Enum.all?(before, fn {_, {_, _, pids}} -> pids != [] end)

    targets = [{@hub, a}, {:"#{@hub}.children", a}]

    for i <- 1..@terms do
      target = Enum.at(targets, rem(i, 2))

      case rem(i, 10) do
        0 ->
          # a real call, which must be answered (a request that happens to be
          # well-formed is answered too, differently)
          request = Gen.request()

          case GenServer.call(target, request, 10_000) do
            {:error, {:bad_request, ^request}} -> :ok
            _ -> assert Synod.Hub.Protocol.call?(request)
          end

        n when n in [1, 2] ->
          GenServer.cast(target, Gen.term(3))

        n when n in [3, 4] ->
          send(target, {:"$gen_call", Gen.term(2), Gen.request()})

        _ ->
          send(target, Gen.message())
      end
    end

    # Everything sent has been handled once a call behind it is answered.
    for t <- targets, do: assert({:error, {:bad_request, :after}} = GenServer.call(t, :after))
    assert snapshot(nodes) == before
    assert {:ok, [_, _]} = GenServer.call({@hub, a}, :members)
  end
end

defmodule Synod.HubStrayTest.Gen do
  @moduledoc false
  # Random terms for the stray-input test: no real module or node names, so
  # nothing well-formed can name a real child, member or function.

  def pick(list), do: Enum.at(list, :rand.uniform(length(list)) - 1)

  def atom, do: pick([:a, :b, :synod_x, nil, true, false, :active, :passive, :x@y, :stopped])

  def term(0), do: leaf()

  def term(depth) do
    case :rand.uniform(8) do
      1 -> List.to_tuple(for _ <- 1..:rand.uniform(6), do: term(depth - 1))
      2 -> for _ <- 1..:rand.uniform(4), do: term(depth - 1)
      3 -> [term(depth - 1) | term(depth - 1)]
      4 -> %{term(0) => term(depth - 1)}
      _ -> leaf()
    end
  end

  defp leaf do
    case :rand.uniform(8) do
      1 -> atom()
      2 -> :rand.uniform(1_000_000) - 500_000
      3 -> :crypto.strong_rand_bytes(:rand.uniform(8))
      4 -> self()
      5 -> make_ref()
      6 -> 1.5
      7 -> []
      8 -> {}
    end
  end

  # A call: mostly a protocol call with a field broken, sometimes any term.
  def request do
    templates = [
      :synod_barrier,
      :members,
      {:whereis, term(1)},
      {:synod_dispatch_event, :e, 1, false},
      {:synod_subscribe, self(), :all},
      {:synod_unsubscribe, self()},
      {:start_children, [{"x", {:m, :f, []}, nil, :active}]},
      {:stop_children, ["x"]},
      {:start_batch, [{"x", {:m, :f, []}}]},
      {:stop_batch, ["x"]},
      :attach
    ]

    case :rand.uniform(3) do
      1 -> term(3)
      _ -> break(pick(templates))
    end
  end

  # A malformed version of a message of docs/protocol.md, or any term.
  def message do
    ref = make_ref()
    spec = {:m, :f, []}

    templates = [
      {:synod_start, ref, [self()], [{"x", spec, nil, :active}], []},
      {:synod_stop, ref, [self()], ["x"], []},
      {:synod_registered, :nobody@nowhere, [{"x", spec, nil, self()}], []},
      {:synod_unregistered, :nobody@nowhere, [{"x", self()}], :stopped, []},
      {:synod_stopped, :nobody@nowhere, 1, ["x"], []},
      {:synod_orphans, :nobody@nowhere, [{"x", spec, nil}]},
      {:synod_sync, :nobody@nowhere, [{"x", spec, nil, self()}], [], []},
      {:synod_hello, :nobody@nowhere, self(), {1, :active_active, 128, 0, :divergence}},
      {:synod_welcome, :nobody@nowhere, self(), {1, :active_active, 128, 0, :divergence}},
      {:synod_bye, :nobody@nowhere},
      {:synod_results, ref, :nobody@nowhere, [{"x", {:ok, self()}}]},
      {:synod_event, :e, 1, false},
      {:synod_child_exit, ref, "x", self(), :normal, nil},
      {:synod_migration_timeout, ref},
      {:synod_handover_done, ref, :nobody@nowhere, []},
      {:synod_peer_timeout, ref},
      {:DOWN, ref, :process, self(), :normal},
      {:EXIT, self(), :kill},
      {:nodedown, :nobody@nowhere},
      {:nodeup, :nobody@nowhere}
    ]

    case :rand.uniform(4) do
      1 -> term(4)
      _ -> break(pick(templates))
    end
  end

  # One field replaced by a random term, one dropped, or one added; or as is.
  defp break(t) when is_tuple(t) and tuple_size(t) > 1 do
    i = :rand.uniform(tuple_size(t) - 1)

    case :rand.uniform(4) do
      1 -> put_elem(t, i, term(2))
      2 -> Tuple.delete_at(t, i)
      3 -> Tuple.append(t, term(1))
      4 -> t
    end
  end

  defp break(t), do: if(:rand.uniform(2) == 1, do: t, else: term(1))
end
