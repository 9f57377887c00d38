defmodule Synod.Test.Coord do
  @moduledoc false
  # Helpers for the coordination tests and bench/coord_bench.exs. Everything
  # that runs on a peer is defined here, in a compiled module.

  alias Synod.{Election, Lock, Store, Values}
  alias Synod.Test.Wait

  @doc "Starts a store on `nodes` (data under `dir`) and waits until every node names its leader."
  def start_store(store, nodes, dir, opts \\ []) do
    :ok = Store.start(store, nodes, dir, opts)
    Synod.Test.Raft.wait_leader(store, nodes)
  end

  # -- election ----------------------------------------------------------------------

  @doc """
  Creates a candidate on this node, owned by a process that lives until told
  to stop (an `:erpc` call's own process would take the candidate with it).
  Events go to `subscriber`; each claim handler run sends
  `{:claimed, id, token, leader_checks}` to `subscriber`, where
  `leader_checks` is `leader?/1` of every handle in `watch_handles`, read at
  once in the handler.
  """
  def candidate(store, election, id, ttl, subscriber, watch_handles \\ []) do
    caller = self()

    owner =
      spawn(fn ->
        handler = check_handler(id, watch_handles, subscriber)

        {:ok, c} =
          Election.candidate(store, election, id,
            ttl: ttl,
            subscriber: subscriber,
            handlers: [handler]
          )

        send(caller, {:candidate, self(), c})

        receive do
          :exit -> :ok
        end
      end)

    receive do
      {:candidate, ^owner, c} -> c
    after
      10_000 -> raise "candidate #{id} not created"
    end
  end

  @doc """
  A claim handler that sends `{:claimed, id, token, leader_checks}` to
  `subscriber`, `leader_checks` being `leader?/1` of each of `others` read
  as the handler runs.
  """
  def check_handler(id, others, subscriber) do
    fn claim ->
      now = :os.perf_counter(:microsecond)
      checks = Enum.map(others, &Election.leader?/1)
      send(subscriber, {:claimed, id, claim.token, checks})
      send(subscriber, {:claimed_at, id, claim.token, now})
    end
  end

  @doc """
  A candidate's `leader_until/1` on the OS's performance counter (µs), a
  clock shared by every VM of the machine, so that it can be compared with
  `{:claimed_at, ...}` times taken on other nodes. Run it on the
  candidate's node.
  """
  def leader_until_shared(cand) do
    case Election.leader_until(cand) do
      nil ->
        nil

      until_ms ->
        until_ms * 1000 - System.monotonic_time(:microsecond) + :os.perf_counter(:microsecond)
    end
  end

  @doc """
  Suspends `pid` from a process of this node that lives until it gets
  `:resume` (a suspension ends with the process that made it, so an `:erpc`
  call's own process cannot make it). Returns that process.
  """
  def suspend(pid) do
    caller = self()

    suspender =
      spawn(fn ->
        true = :erlang.suspend_process(pid)
        send(caller, {:suspended, self()})

        receive do
          :resume -> :erlang.resume_process(pid)
        end
      end)

    receive do
      {:suspended, ^suspender} -> suspender
    end
  end

  # -- locks --------------------------------------------------------------------------

  @doc """
  `rounds` lock cycles on `key`; inside each, tells `checker` it entered with
  its token, holds the lock `hold_ms`, and tells it it left. Returns the
  number of cycles completed and the errors seen.
  """
  def lock_loop(store, key, ttl, rounds, checker, hold_ms \\ 0) do
    Enum.reduce(1..rounds, {0, []}, fn _, {ok, errors} ->
      result =
        Lock.lock(
          store,
          key,
          fn token ->
            :ok = GenServer.call(checker, {:enter, token, self()}, 30_000)
            if hold_ms > 0, do: Process.sleep(hold_ms)
            :ok = GenServer.call(checker, {:exit, token, self()}, 30_000)
            token
          end,
          ttl: ttl
        )

      case result do
        {:ok, _token} -> {ok + 1, errors}
        other -> {ok, [other | errors]}
      end
    end)
  end

  @doc "Runs `lock_loop/6` in `clients` processes on each of `nodes`; returns all their results."
  def lock_contenders(nodes, clients, store, key, ttl, rounds, checker, hold_ms \\ 0) do
    for n <- nodes, _ <- 1..clients do
      Task.async(fn ->
        :erpc.call(
          n,
          __MODULE__,
          :lock_loop,
          [store, key, ttl, rounds, checker, hold_ms],
          120_000
        )
      end)
    end
    |> Task.await_many(150_000)
  end

  @doc "Takes the lock if free and returns its token (`Synod.Lock.try_lock/4`)."
  def try_lock_token(store, key, ttl), do: Lock.try_lock(store, key, & &1, ttl: ttl)

  @doc "Waits for the lock and returns its token (`Synod.Lock.lock/4`)."
  def lock_token(store, key, ttl, opts \\ []), do: Lock.lock(store, key, & &1, [ttl: ttl] ++ opts)

  @doc "Takes the lock, sends `{:holding, token}` to `notify` and holds it until killed."
  def hold_lock(store, key, ttl, notify) do
    Lock.lock(
      store,
      key,
      fn token ->
        send(notify, {:holding, token})
        Process.sleep(:infinity)
      end,
      ttl: ttl
    )
  end

  @doc """
  Spawns, on this node, a process that takes the lock `key` (`Synod.Lock.lock/4`
  with `ttl` and `opts`), sends `{:holding, pid, token}` to `notify`, keeps the lock until
  it gets `:return`, and then sends `{:lock_result, pid, result}` with what
  `lock/5` returned (`fun` returns `:done`). Returns the process.
  """
  def spawn_holder(store, key, ttl, notify, opts \\ []) do
    spawn(fn ->
      result =
        Lock.lock(
          store,
          key,
          fn token ->
            send(notify, {:holding, self(), token})

            receive do
              :return -> :done
            end
          end,
          [ttl: ttl] ++ opts
        )

      send(notify, {:lock_result, self(), result})
    end)
  end

  # -- values ------------------------------------------------------------------------

  @doc "`n` increments of `key` by transform; returns {acknowledged, unknown outcome, errors}."
  def increments(store, key, n) do
    Enum.reduce(1..n, {0, 0, []}, fn _, {ok, unknown, errors} ->
      case Values.transform(
             store,
             key,
             fn
               nil -> 1
               v -> v + 1
             end,
             timeout: 10_000
           ) do
        {:ok, _} -> {ok + 1, unknown, errors}
        {:error, :timeout} -> {ok, unknown + 1, errors}
        other -> {ok, unknown, [other | errors]}
      end
    end)
  end

  @doc "Runs `increments/3` in `procs` processes spread over `nodes`; returns their results."
  def concurrent_increments(nodes, procs, store, key, n) do
    for i <- 1..procs do
      node = Enum.at(nodes, rem(i, length(nodes)))
      Task.async(fn -> :erpc.call(node, __MODULE__, :increments, [store, key, n], 120_000) end)
    end
    |> Task.await_many(150_000)
  end

  @doc "Waits until `fun` returns a truthy value (Synod.Test.Wait.until/2)."
  def until(fun, timeout \\ 15_000), do: Wait.until(fun, timeout)
end

defmodule Synod.Test.Coord.Checker do
  @moduledoc false
  # Mutual-exclusion checker: lock holders report entering and leaving with
  # their fencing token. Overlaps (an enter while another holder is inside),
  # tokens that do not grow, and leaves by a non-holder are violations.
  use GenServer

  def start, do: GenServer.start(__MODULE__, nil)
  def report(pid), do: GenServer.call(pid, :report)

  @impl true
  def init(nil), do: {:ok, %{inside: nil, last: 0, grants: 0, violations: [], tokens: []}}

  @impl true
  def handle_call({:enter, token, who}, _from, state) do
    violations =
      cond do
        state.inside != nil -> [{:overlap, state.inside, {token, who}} | state.violations]
        token <= state.last -> [{:token_not_growing, state.last, token} | state.violations]
        true -> state.violations
      end

    {:reply, :ok,
     %{
       state
       | inside: {token, who},
         last: max(token, state.last),
         grants: state.grants + 1,
         violations: violations,
         tokens: [{token, who} | state.tokens]
     }}
  end

  def handle_call({:exit, token, who}, _from, state) do
    case state.inside do
      {^token, ^who} ->
        {:reply, :ok, %{state | inside: nil}}

      other ->
        {:reply, :ok,
         %{state | violations: [{:bad_exit, other, {token, who}} | state.violations]}}
    end
  end

  def handle_call(:report, _from, state),
    do: {:reply, %{state | tokens: Enum.reverse(state.tokens)}, state}
end
