defmodule Synod.Raft.Balancer.Shell do
  @moduledoc false
  # The per-node process that keeps group leaders spread (docs/raft.md,
  # "Leaders spread"). Every `:raft_balance_ms` (application env, default
  # 2,000 ms), and `:raft_balance_settle_ms` (default 1,000 ms) after a node
  # comes up or goes down, it reads the views of the groups with a member
  # here (Synod.Raft.Info), and when this node leads at least 2 more groups
  # than some node, reads the voters of the groups it leads (their status),
  # asks Synod.Raft.Balancer.plan/5 what to move (at most
  # `:raft_balance_moves`, default 8, a round) and asks those members to
  # transfer leadership. A group it moved is left alone for 3 rounds. The
  # voters read are kept for 30 rounds, and the nodes they name (with the
  # nodes seen leading) are the ones "some node" above is taken from.
  # `:raft_balance` false turns it off (checked every round).
  #
  # It takes no input from other nodes: every call, cast and unknown message
  # is stray (Synod.Stray).

  use GenServer
  require Logger

  alias Synod.Raft.Balancer
  alias Synod.Stray

  @who "raft balancer"
  @cooldown_rounds 3
  @voters_rounds 30
  @call_timeout 2_000

  @doc false
  def start_link(_), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @impl true
  def init([]) do
    :ok = :net_kernel.monitor_nodes(true)

    {:ok,
     schedule(
       %{round: 0, moved: %{}, voters: %{}, timer: nil, due: nil},
       env(:raft_balance_ms, 2_000)
     )}
  end

  @impl true
  def handle_call(request, from, state),
    do: Stray.call(request, from, state, @who, false, fn _, _, s -> {:noreply, s} end)

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, @who)

  @impl true
  def handle_info({:round, ref}, %{timer: ref} = state) do
    state = %{state | timer: nil, due: nil, round: state.round + 1}
    state = if env(:raft_balance, true), do: run_round(state), else: state
    {:noreply, schedule(state, env(:raft_balance_ms, 2_000))}
  end

  def handle_info({:round, _stale}, state), do: {:noreply, state}

  def handle_info({event, _node}, state) when event in [:nodeup, :nodedown],
    do: {:noreply, schedule(state, env(:raft_balance_settle_ms, 1_000))}

  def handle_info(msg, state) do
    Stray.ignored(@who, :message, msg)
    {:noreply, state}
  end

  # One timer at a time: an earlier round replaces a later one.
  defp schedule(state, delay) do
    due = System.monotonic_time(:millisecond) + delay

    if state.due != nil and state.due <= due do
      state
    else
      if state.timer, do: Process.cancel_timer(state.timer)
      ref = make_ref()
      Process.send_after(self(), {:round, ref}, delay)
      %{state | timer: ref, due: due}
    end
  end

  defp run_round(state) do
    seen = seen()
    live = MapSet.new([node() | Node.list()])
    loads = Balancer.leaders_per_node(seen)
    mine = Map.get(loads, node(), 0)
    # Nodes that could lead: the leaders seen and the voters read before.
    known = for {_g, {vs, _r}} <- state.voters, v <- vs, into: MapSet.new(Map.keys(loads)), do: v

    least =
      known
      |> MapSet.intersection(live)
      |> Enum.map(&Map.get(loads, &1, 0))
      |> Enum.min(fn -> 0 end)

    fresh? = map_size(state.voters) == 0

    # Only a node that leads 2 more than some node can move anything: the
    # voters (a call to each member this node leads) are read only then,
    # and kept for @voters_rounds rounds.
    if mine - least >= 2 or (fresh? and mine >= 2) do
      skip = for {g, r} <- state.moved, state.round - r < @cooldown_rounds, do: g
      state = read_voters(state, for({g, l} <- seen, l == node(), g not in skip, do: g))

      led =
        for {g, l} <- seen,
            l == node(),
            g not in skip,
            {vs, _r} <- [state.voters[g]],
            into: %{},
            do: {g, vs}

      opts = [max_moves: env(:raft_balance_moves, 8)]
      moves = Balancer.plan(node(), seen, led, MapSet.to_list(live), opts)
      moved = Enum.reduce(moves, state.moved, &transfer(&1, &2, state.round))
      %{state | moved: Map.filter(moved, fn {_g, r} -> state.round - r < @cooldown_rounds end)}
    else
      state
    end
  end

  # Voters of the groups this node leads, read again after @voters_rounds;
  # groups no longer led here are forgotten.
  defp read_voters(state, groups) do
    voters =
      Map.new(groups, fn g ->
        case state.voters[g] do
          {vs, r} when state.round - r < @voters_rounds -> {g, {vs, r}}
          _ -> {g, {voters(g), state.round}}
        end
      end)

    %{state | voters: Map.filter(voters, &is_list(elem(elem(&1, 1), 0)))}
  end

  # Every group with a live member here, with the leader its view names.
  defp seen do
    for {group, pid, view} <- :ets.tab2list(Synod.Raft.Info),
        Process.alive?(pid),
        do: {group, view.leader}
  rescue
    ArgumentError -> []
  end

  # The voters of a group this node leads that may lead it (no witnesses).
  defp voters(group) do
    st = GenServer.call(Synod.Raft.member_name(group), :status, @call_timeout)
    if st.role == :leader, do: st.voter_nodes -- st.witness_nodes
  catch
    :exit, _ -> nil
  end

  defp transfer({group, to}, moved, round) do
    case GenServer.call(Synod.Raft.member_name(group), {:transfer_leader, to}, @call_timeout) do
      :ok -> :ok
      other -> Logger.debug("raft balancer: #{group} to #{to}: #{inspect(other)}")
    end

    Map.put(moved, group, round)
  catch
    :exit, _ -> Map.put(moved, group, round)
  end

  defp env(key, default) do
    case Application.get_env(:synod, key, default) do
      v when is_integer(v) and v > 0 -> v
      v when is_boolean(v) and is_boolean(default) -> v
      _ -> default
    end
  end
end
