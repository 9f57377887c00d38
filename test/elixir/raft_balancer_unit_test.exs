defmodule Synod.RaftBalancerUnitTest do
  # Synod.Raft.Balancer without peers: the rendezvous order and the plan of
  # leadership transfers (bounded, with hysteresis, converging when every
  # node plans at once from the same views).
  use ExUnit.Case, async: true

  alias Synod.Raft.Balancer

  @nodes [:a@h, :b@h, :c@h]

  # Groups g1..gN led as `counts` says ({node, how many}), all on @nodes.
  defp groups(counts) do
    counts
    |> Enum.flat_map(fn {node, n} -> List.duplicate(node, n) end)
    |> Enum.with_index(1)
    |> Enum.map(fn {leader, i} -> {:"g#{i}", leader} end)
  end

  defp mine(seen, me, voters \\ @nodes),
    do: for({g, ^me} <- seen, into: %{}, do: {g, voters})

  defp plan(me, seen, opts \\ []),
    do: Balancer.plan(me, seen, mine(seen, me), Keyword.get(opts, :live, @nodes), opts)

  # Every node plans from the same views; all the moves are applied at once.
  defp round_all(seen, nodes \\ @nodes) do
    moves = Enum.flat_map(nodes, &Balancer.plan(&1, seen, mine(seen, &1, nodes), nodes))
    to = Map.new(moves)
    {Enum.map(seen, fn {g, l} -> {g, Map.get(to, g, l)} end), length(moves)}
  end

  defp spread(seen, nodes) do
    loads = Balancer.leaders_per_node(seen)
    counts = Enum.map(nodes, &Map.get(loads, &1, 0))
    Enum.max(counts) - Enum.min(counts)
  end

  test "rank is a permutation, the same for a group on every call, and keeps its order without a voter" do
    for g <- [:s1, :s2, :orders, :"tenant-42"] do
      r = Balancer.rank(g, @nodes)
      assert Enum.sort(r) == Enum.sort(@nodes)
      assert Balancer.rank(g, Enum.reverse(@nodes)) == r
      for gone <- @nodes, do: assert(Balancer.rank(g, @nodes -- [gone]) == r -- [gone])
    end
  end

  test "rank spreads the first choice of many groups over the voters" do
    firsts = for i <- 1..300, do: hd(Balancer.rank(:"group#{i}", @nodes))
    freq = Enum.frequencies(firsts)
    assert map_size(freq) == 3
    for {_node, n} <- freq, do: assert(n in 70..130, inspect(freq))
  end

  test "balanced leaders, or a difference of one, move nothing" do
    assert plan(:a@h, groups(a@h: 4, b@h: 4, c@h: 4)) == []
    assert plan(:a@h, groups(a@h: 5, b@h: 4, c@h: 4)) == []
    assert plan(:a@h, groups(a@h: 2, b@h: 1), live: [:a@h, :b@h]) == []
    assert [{_, :c@h}] = plan(:a@h, groups(a@h: 2, b@h: 1))
    assert plan(:a@h, groups(a@h: 1)) == []
  end

  test "a node leading everything hands over down to the average, least-loaded first" do
    seen = groups(a@h: 12)
    moves = plan(:a@h, seen, max_moves: 100)
    assert length(moves) == 8
    assert Enum.frequencies(Enum.map(moves, &elem(&1, 1))) == %{b@h: 4, c@h: 4}
    assert {_, 0} = round_all(elem(round_all(seen), 0))
  end

  test "moves are bounded per round" do
    assert length(plan(:a@h, groups(a@h: 12), max_moves: 3)) == 3
    assert length(plan(:a@h, groups(a@h: 12))) == 8
  end

  test "a node above the average moves one to a node below it" do
    assert [{_, :c@h}] = plan(:a@h, groups(a@h: 5, b@h: 4, c@h: 3))
    # 13 groups: 5 is the ceiling, 3 under the floor of 4.33
    assert [{_, :c@h}] = plan(:a@h, groups(a@h: 5, b@h: 5, c@h: 3))
  end

  test "a restarted node gets its share back in one round without overshoot" do
    seen = groups(a@h: 6, b@h: 6)
    assert length(plan(:a@h, seen)) == 2
    {after_, 4} = round_all(seen)
    assert Balancer.leaders_per_node(after_) == %{a@h: 4, b@h: 4, c@h: 4}
  end

  test "only live voters are targets; skipped groups stay" do
    seen = groups(a@h: 6)
    assert plan(:a@h, seen, live: [:a@h, :b@h]) |> Enum.map(&elem(&1, 1)) |> Enum.uniq() == [:b@h]
    assert plan(:a@h, seen, live: [:a@h]) == []
    # c@h is a witness (not among the voters that may lead)
    moves = Balancer.plan(:a@h, seen, mine(seen, :a@h, [:a@h, :b@h]), @nodes)
    assert Enum.all?(moves, &(elem(&1, 1) == :b@h))
    all = Map.keys(mine(seen, :a@h))
    assert Balancer.plan(:a@h, seen, mine(seen, :a@h), @nodes, skip: all) == []
  end

  test "groups without a leader or led by a dead node count for nobody" do
    seen = [{:x, nil}, {:y, :dead@h} | groups(a@h: 4, b@h: 4, c@h: 4)]
    assert plan(:a@h, seen) == []
  end

  test "from any start, all nodes planning at once converge within one and then stop (no flapping)" do
    for seed <- 1..200 do
      :rand.seed(:exsss, {seed, seed * 7, seed * 13})
      n = Enum.random(1..40)
      nodes = Enum.take(@nodes ++ [:d@h, :e@h], Enum.random(2..5))
      seen = for i <- 1..n, do: {:"g#{i}", Enum.random(nodes)}

      final =
        Enum.reduce_while(1..20, seen, fn _, s ->
          case round_all(s, nodes) do
            {s, 0} -> {:halt, s}
            {s, _} -> {:cont, s}
          end
        end)

      assert spread(final, nodes) <= 1,
             "seed #{seed}: #{inspect(Balancer.leaders_per_node(final))}"

      assert {_, 0} = round_all(final, nodes)
    end
  end
end
