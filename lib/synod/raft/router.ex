defmodule Synod.Raft.Router do
  @moduledoc false
  # Gets a request to a group's leader from any node, member or not, without
  # sleeping. One per node; it owns the leader cache (an ETS table read and
  # written by the callers themselves) and drops the entries of a node that
  # goes down.
  #
  # The cache holds, per group, the node believed to lead. It is filled from
  # answers (a node that answered a leader-only request leads), from
  # `{:error, {:not_leader, Hint}}` hints, and from the local member's view
  # changes (Synod.Raft.Info.put/3 calls learn/2 and forget/1: the leader
  # watch of a member's node). A node that runs no member of a group
  # subscribes once, after its first answer from the group, to the leader
  # watches of the group's voters (`subscribe/2`, run on each of them): their
  # changes come to this process and fill the cache too, so such a node
  # learns a new leader after a failover without a failed call first. It is
  # dropped on nodedown and on a `not_leader` without a hint.
  #
  # A call goes straight to the cached leader. On a miss it asks the local
  # member's view, else every connected node's (one parallel round of
  # `Synod.Raft.Info.view/1`; if none runs a member, one more round on the
  # nodes those are connected to): no member anywhere is `{:error,
  # {:unknown_group, G}}` at once; members but no leader yet is the one case
  # that backs off (2 ms doubling to 50 ms) before asking again. A
  # `not_leader` with a hint is re-sent to the hint at once.
  #
  # A member that cannot persist (a full disk) answers `{:error, :no_space}`
  # and steps down; the call is re-routed like a `not_leader` without a
  # hint, and the local view, marked `no_space`, is passed over for the
  # other nodes' (the stuck member hears no new leader). If no other leader
  # takes it before the deadline, the caller gets `{:error, :no_space}`, not
  # a timeout.
  #
  # Never here: a decision about the group's state. The router only picks a
  # node to ask; every answer comes from a member.

  use GenServer

  alias Synod.Raft.Info
  alias Synod.Stray

  @table __MODULE__
  @backoff_min 2
  @backoff_max 50
  @discover_timeout 1_000

  @doc false
  def start_link(_), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  # State: per group, the voters' nodes whose leader watch reports here and
  # the highest term a report carried (`watched`, `terms`).
  @impl true
  def init([]) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    :ok = :net_kernel.monitor_nodes(true)
    {:ok, %{watched: %{}, terms: %{}}}
  end

  # It takes no calls: every one is stray (Synod.Stray: a call is answered
  # {:error, {:bad_request, _}}; logged at most once a second). The one
  # cast is this node's callers asking it to subscribe (watch_from/2).
  @impl true
  def handle_call(request, from, state),
    do: Stray.call(request, from, state, "raft router", false, fn _, _, s -> {:noreply, s} end)

  # Only after this node's caller set the group's flag row, and only to a
  # connected node: a cast from elsewhere cannot make it dial anyone.
  @impl true
  def handle_cast({:watch, group, node} = request, state) when is_atom(group) and is_atom(node) do
    if :ets.member(@table, {:watching, group}) and node in Node.list(),
      do: {:noreply, subscribe_on(state, group, [node])},
      else: Stray.cast(request, state, "raft router")
  end

  def handle_cast(request, state), do: Stray.cast(request, state, "raft router")

  @impl true
  def handle_info({:nodedown, node}, state) do
    :ets.match_delete(@table, {:_, node})
    {:noreply, unwatch(state, node)}
  end

  def handle_info({:nodeup, _node}, state), do: {:noreply, state}

  # A voter's leader watch (subscribe/2): the leader it names, if its term
  # is the highest reported, or the same term with a leader.
  def handle_info({:synod_leader_watch, group, {__MODULE__, _}, _event, _before, after_}, state)
      when is_map_key(state.watched, group) and is_map(after_) do
    {:noreply, state |> heard(group, after_) |> more_voters(group, after_)}
  end

  # A subscription made (or not) on `node`: `{:ok, voters}` or an error.
  def handle_info({:subscribed, group, node, result}, state)
      when is_map_key(state.watched, group) do
    case result do
      {:ok, voters} when is_list(voters) ->
        state = put_in(state.watched[group][node], :watching)
        {:noreply, subscribe_on(state, group, voters)}

      _ ->
        {:noreply, drop_watch(state, group, node)}
    end
  end

  def handle_info(msg, state) do
    Stray.ignored("raft router", :message, msg)
    {:noreply, state}
  end

  # -- leader watches of a group this node runs no member of ------------------------------

  @doc false
  # Run on a voter's node (by :erpc from a router): adds a leader watch of
  # this node's member that reports to `router`, and answers
  # `{:ok, voter_nodes}` (the router subscribes on those too), or
  # `{:error, :no_member}`. The watch ends with the router (a monitor).
  @spec subscribe(atom(), pid()) :: {:ok, [node()]} | {:error, :no_member}
  def subscribe(group, router) when is_atom(group) and is_pid(router) do
    with :ok <- Synod.Raft.add_leader_watch(group, {__MODULE__, node(router)}, router) do
      case Synod.Raft.status(group) do
        %{voter_nodes: voters} -> {:ok, voters}
        _ -> {:ok, []}
      end
    end
  catch
    :exit, _ -> {:error, :no_member}
  end

  # After an answer from `node` (which runs a member): a node with no member
  # of `group` subscribes to the voters' leader watches, once (the flag row
  # goes when every watched node is down or failed).
  defp watch_from(group, node) do
    # A lookup first: most answers find the flag set (no write lock).
    if node != node() and not :ets.member(@table, {:watching, group}) and
         Info.view(group) == nil and :ets.insert_new(@table, {{:watching, group}, true}),
       do: GenServer.cast(__MODULE__, {:watch, group, node})

    :ok
  rescue
    ArgumentError -> :ok
  end

  # Subscribes on each of `nodes` not yet asked, each in a process of its
  # own (the router never waits on another node).
  defp subscribe_on(state, group, nodes) do
    watched = Map.get(state.watched, group, %{})
    router = self()
    connected = Node.list()
    new = for n <- Enum.uniq(nodes), n in connected, not Map.has_key?(watched, n), do: n

    for n <- new do
      spawn(fn ->
        result =
          try do
            :erpc.call(n, __MODULE__, :subscribe, [group, router], @discover_timeout)
          catch
            _, _ -> {:error, :unreachable}
          end

        send(router, {:subscribed, group, n, result})
      end)
    end

    watched = Enum.reduce(new, watched, &Map.put(&2, &1, :asking))
    %{state | watched: Map.put(state.watched, group, watched)}
  end

  defp more_voters(state, group, %{voters: voters}) when is_list(voters),
    do: subscribe_on(state, group, voters)

  defp more_voters(state, _group, _view), do: state

  # A report names a connected node as leader, or none.
  defp heard(state, group, %{term: term, leader: leader})
       when is_integer(term) and (leader == nil or is_atom(leader)) do
    known = Map.get(state.terms, group, 0)

    leader = if leader in Node.list(), do: leader

    cond do
      term > known and leader != nil -> learn(group, leader)
      term > known -> forget(group)
      term == known and leader != nil -> learn(group, leader)
      true -> :stale
    end

    %{state | terms: Map.put(state.terms, group, max(term, known))}
  end

  defp heard(state, _group, _view), do: state

  defp unwatch(state, node) do
    Enum.reduce(state.watched, state, fn {group, nodes}, state ->
      if Map.has_key?(nodes, node), do: drop_watch(state, group, node), else: state
    end)
  end

  # The last watched node of a group gone: the next answer subscribes again.
  defp drop_watch(state, group, node) do
    nodes = Map.delete(Map.get(state.watched, group, %{}), node)

    if nodes == %{} do
      :ets.delete(@table, {:watching, group})
      %{state | watched: Map.delete(state.watched, group), terms: Map.delete(state.terms, group)}
    else
      put_in(state.watched[group], nodes)
    end
  end

  # -- the cache ----------------------------------------------------------------------

  @doc "The node this node believes leads `group`, or nil."
  @spec leader(atom()) :: node() | nil
  def leader(group) do
    case :ets.lookup(@table, group) do
      [{_, node}] -> node
      [] -> nil
    end
  rescue
    ArgumentError -> nil
  end

  @doc "Records `node` as `group`'s leader."
  @spec learn(atom(), node()) :: true
  def learn(group, node) when is_atom(node) and node != nil do
    # Most answers confirm what is cached: a lookup is cheaper than a write.
    case :ets.lookup(@table, group) do
      [{_, ^node}] -> true
      _ -> :ets.insert(@table, {group, node})
    end
  rescue
    ArgumentError -> true
  end

  @doc "Forgets `group`'s leader."
  @spec forget(atom()) :: true
  def forget(group) do
    :ets.delete(@table, group)
  rescue
    ArgumentError -> true
  end

  @doc "Forgets `node` as `group`'s leader, unless another was learnt since."
  @spec forget(atom(), node()) :: true
  def forget(group, node) do
    :ets.delete_object(@table, {group, node})
  rescue
    ArgumentError -> true
  end

  # -- calls ---------------------------------------------------------------------------

  @doc """
  Calls the process registered as `name` on `group`'s leader node with
  `request` and returns its answer. `deadline` is a monotonic time (ms);
  each round trip waits at most `call_timeout` ms. Answers the caller must
  see as they are (anything but `not_leader`, a member gone, an entry
  dropped, no space) end the call. Errors: `{:error, :timeout}`, `{:error,
  {:unknown_group, group}}`, `{:error, :no_space}` (the deadline passed
  after a member that cannot persist refused the request).
  """
  @spec call(atom(), atom(), term(), integer(), pos_integer()) :: term()
  def call(group, name, request, deadline, call_timeout),
    do: route(group, name, request, deadline, call_timeout, leader(group), @backoff_min, nil)

  defp route(group, name, request, deadline, call_timeout, target, backoff, failed) do
    left = deadline - now()

    cond do
      left <= 0 ->
        {:error, :timeout}

      target == nil ->
        case find_leader(group, deadline, failed, backoff) do
          {:ok, node, backoff} ->
            route(group, name, request, deadline, call_timeout, node, backoff, failed)

          {:error, _} = error ->
            error
        end

      true ->
        attempt(group, name, request, deadline, call_timeout, {target, failed}, backoff, left)
    end
  end

  @doc """
  The node believed to lead `group`: the cached one, else located (see the
  module doc; `failed` is a node just found not to lead, not to be taken
  from a stale view). Waits, backing off, only while members know no
  leader. `{:ok, node}`, `{:error, :timeout}` past `deadline`, or
  `{:error, {:unknown_group, group}}`.
  """
  @spec leader_node(atom(), integer(), node() | nil) :: {:ok, node()} | {:error, term()}
  def leader_node(group, deadline, failed \\ nil) do
    case leader(group) do
      nil ->
        with {:ok, node, _backoff} <- find_leader(group, deadline, failed, @backoff_min),
             do: {:ok, node}

      node ->
        {:ok, node}
    end
  end

  defp find_leader(group, deadline, failed, backoff) do
    left = deadline - now()

    case locate(group, failed) do
      {:ok, node} ->
        {:ok, node, backoff}

      :unknown ->
        {:error, {:unknown_group, group}}

      :no_leader when left <= 0 ->
        {:error, :timeout}

      :no_leader ->
        # After a pause `failed` may lead again (its member restarted).
        Process.sleep(min(backoff, left))
        find_leader(group, deadline, nil, min(backoff * 2, @backoff_max))
    end
  end

  # `previous` is the node that redirected here: a hint back to it (two
  # stale views naming each other) counts as no hint.
  defp attempt(group, name, request, deadline, call_timeout, {target, previous}, backoff, left) do
    retry = &route(group, name, request, deadline, call_timeout, &1, backoff, &2)

    case call_name(target, name, request, min(left, call_timeout)) do
      {:error, {:not_leader, hint}}
      when is_atom(hint) and hint not in [nil, target, previous] ->
        learn(group, hint)
        retry.(hint, target)

      {:error, {:not_leader, _}} ->
        forget(group, target)
        retry.(nil, target)

      {:error, :no_space} ->
        # A timeout after a member refused for want of space is that
        # refusal (whatever was tried after it): {:error, :no_space}.
        forget(group, target)

        case retry.(nil, target) do
          {:error, :timeout} -> {:error, :no_space}
          answer -> answer
        end

      {:error, reason} when reason in [:no_member, :dropped, :unknown_outcome, :call_timeout] ->
        # The node runs no member (any more), or the leader lost the entry
        # with its leadership, or did not answer in time: ask again. Safe
        # for commands, whose request id makes the group apply each once.
        forget(group, target)
        retry.(nil, target)

      answer ->
        learn(group, target)
        watch_from(group, target)
        answer
    end
  end

  # Where `group`'s leader is, from this node's member or else from every
  # connected node's: {:ok, node}, :no_leader (members, none knows a leader
  # other than `failed`) or :unknown (no member on any connected node).
  defp locate(group, failed) do
    views =
      case Info.view(group) do
        nil -> remote_views(group)
        %{no_space: true} -> remote_views(group)
        view -> [view]
      end

    leaders = for %{leader: l, term: t} <- views, l != nil, l != failed, do: {t, l}

    cond do
      leaders != [] -> {:ok, leaders |> Enum.max() |> elem(1)}
      views == [] -> :unknown
      true -> :no_leader
    end
  end

  # The views of the members on the connected nodes; if there are none,
  # also on the nodes those know (a node that has just joined is connected
  # to one or two nodes until `global` has made the mesh: asking connects it).
  defp remote_views(group) do
    case views_on(Node.list(), group) do
      [] ->
        known = Node.list()
        others = multicall(known, :erlang, :nodes, []) |> List.flatten() |> Enum.uniq()
        views_on(others -- [node() | known], group)

      views ->
        views
    end
  end

  defp views_on(nodes, group),
    do: for(%{} = view <- multicall(nodes, Info, :view, [group]), do: view)

  defp multicall(nodes, m, f, a) do
    for {:ok, result} <- :erpc.multicall(nodes, m, f, a, @discover_timeout), do: result
  end

  @doc false
  # GenServer.call to `{name, node}` with exits turned into errors: a
  # process or node that is not there is `:no_member`, no answer in
  # `timeout` is `:call_timeout`.
  def call_name(node, name, request, timeout) do
    GenServer.call({name, node}, request, timeout)
  catch
    :exit, {:timeout, _} -> {:error, :call_timeout}
    :exit, {_, _} -> {:error, :no_member}
  end

  # (the BIF itself: System.monotonic_time/1 normalizes its unit first)
  defp now, do: :erlang.monotonic_time(:millisecond)
end
