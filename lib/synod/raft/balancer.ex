defmodule Synod.Raft.Balancer do
  @moduledoc false
  # Where group leaders should be (docs/raft.md, "Leaders spread"). Pure:
  # the per-node shell (Synod.Raft.Balancer.Shell) reads the views of the
  # groups with a member on its node, asks plan/4 which of the groups this
  # node leads to hand over, and asks those leaders to transfer.
  #
  # Two parts:
  #
  #   * rank/2, the preference of one group over its voters by rendezvous
  #     (highest-random-weight) hashing of {group, voter}. The member uses it
  #     for the order in which survivors campaign (first election and fast
  #     failover after a nodedown), so leaders start spread and a dead node's
  #     groups go to different survivors, each the same on every node.
  #
  #   * plan/4, the leadership transfers this node makes in one round. A
  #     node's load is how many groups it leads (of the groups seen here).
  #     A group this node leads moves to the least-loaded live voter
  #     (ties: the group's rendezvous order) when all three hold:
  #       - this node leads at least 2 more groups than the target;
  #       - this node stays at or above the floor of the average load;
  #       - this node is above the ceiling of the average, or the target is
  #         below its floor.
  #     The first keeps it from flapping (a difference of one never moves);
  #     the second keeps nodes that are over the average at the same time
  #     from all pushing past it into the same target; the third makes it
  #     stop once every node is within one of the average. Loads are updated
  #     after each planned move, at most `max_moves` moves a round, and
  #     groups in `skip` (moved lately: their views may not show it yet) are
  #     left alone.

  @typedoc "A group with a member on this node, and the node it names as leader (nil: none)."
  @type seen :: {group :: atom(), leader :: node() | nil}

  @doc """
  The voters in the order a group prefers them as leader (rendezvous hashing
  of `{group, voter}`: the same order on every node, and removing a voter
  keeps the order of the others).
  """
  @spec rank(atom(), [term()]) :: [term()]
  def rank(group, voters) do
    Enum.sort_by(voters, &{-:erlang.phash2({group, &1}, 4_294_967_296), &1})
  end

  @doc """
  The transfers `me` makes this round, as `[{group, transfer_to}]`.

  `seen` holds every group with a member here and its leader; `mine` maps
  each group `me` leads to the voters that may lead it (no witnesses, no
  learners); `live` the nodes connected now (with `me`). Options:
  `:max_moves` (default 8) and `:skip` (groups not to move this round).
  """
  @spec plan(node(), [seen()], %{atom() => [node()]}, [node()], keyword()) ::
          [{atom(), node()}]
  def plan(me, seen, mine, live, opts \\ []) do
    max_moves = Keyword.get(opts, :max_moves, 8)
    skip = MapSet.new(Keyword.get(opts, :skip, []))
    live = MapSet.new([me | live])
    loads = loads(me, seen, mine, live)

    {moves, _loads} =
      mine
      |> Enum.reject(fn {group, _} -> MapSet.member?(skip, group) end)
      |> Enum.sort()
      |> Enum.reduce_while({[], loads}, fn {group, voters}, {moves, loads} ->
        if length(moves) >= max_moves do
          {:halt, {moves, loads}}
        else
          case target(me, group, voters, live, loads) do
            nil -> {:cont, {moves, loads}}
            to -> {:cont, {[{group, to} | moves], move(loads, me, to)}}
          end
        end
      end)

    Enum.reverse(moves)
  end

  @doc "Leaders per node in `seen` (nodes leading nothing are absent)."
  @spec leaders_per_node([seen()]) :: %{node() => pos_integer()}
  def leaders_per_node(seen) do
    seen |> Enum.map(&elem(&1, 1)) |> Enum.reject(&is_nil/1) |> Enum.frequencies()
  end

  # Every live node that leads a group seen here or may lead one of mine,
  # with how many groups it leads.
  defp loads(me, seen, mine, live) do
    counted = for {_g, l} <- seen, l != nil, MapSet.member?(live, l), do: l
    voters = for {_g, vs} <- mine, v <- vs, MapSet.member?(live, v), do: v
    zero = Map.new([me | voters ++ counted], &{&1, 0})
    Enum.reduce(counted, zero, fn l, acc -> Map.update!(acc, l, &(&1 + 1)) end)
  end

  defp target(me, group, voters, live, loads) do
    candidates = for v <- rank(group, voters), v != me, MapSet.member?(live, v), do: v

    with [_ | _] <- candidates,
         to <- Enum.min_by(candidates, &Map.fetch!(loads, &1)),
         true <- worth?(Map.fetch!(loads, me), Map.fetch!(loads, to), loads) do
      to
    else
      _ -> nil
    end
  end

  defp worth?(mine, theirs, loads) do
    total = loads |> Map.values() |> Enum.sum()
    n = map_size(loads)
    floor = div(total, n)
    ceil = div(total + n - 1, n)
    mine - theirs >= 2 and mine - 1 >= floor and (mine > ceil or theirs < floor)
  end

  defp move(loads, from, to),
    do: loads |> Map.update!(from, &(&1 - 1)) |> Map.update!(to, &(&1 + 1))
end
