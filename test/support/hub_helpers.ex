defmodule Synod.Test.HubWorker do
  @moduledoc false
  # A trivial hub child for tests and benchmarks. It remembers its id (in
  # the process dictionary, so a node can list what really runs without
  # asking the registry), the modes it was told, and a counter that hot
  # handover carries over.
  use GenServer
  @behaviour Synod.Handover

  def start_link(id), do: GenServer.start_link(__MODULE__, id)
  def start_link(id, :fail), do: {:error, {:refused, id}}
  def start_link(id, :crash_once), do: GenServer.start_link(__MODULE__, {id, :crash_once})
  # traps exits and never finishes terminating: only a kill stops it
  def start_link(id, :stubborn), do: GenServer.start_link(__MODULE__, {id, :stubborn})

  @impl GenServer
  def init({id, :stubborn}) do
    Process.flag(:trap_exit, true)
    Process.put(:synod_test_id, id)
    {:ok, %{id: id, modes: [], count: 0, stubborn: true}}
  end

  def init({id, :crash_once}) do
    Process.put(:synod_test_id, id)
    {:ok, %{id: id, modes: [], count: 0}}
  end

  def init(id) do
    Process.put(:synod_test_id, id)
    {:ok, %{id: id, modes: [], count: 0}}
  end

  @impl GenServer
  def handle_call(:state, _from, state), do: {:reply, state, state}

  def handle_call(:bump, _from, state),
    do: {:reply, state.count + 1, %{state | count: state.count + 1}}

  @impl GenServer
  def handle_info({:synod_mode, _hub, mode}, state),
    do: {:noreply, %{state | modes: [mode | state.modes]}}

  def handle_info(_other, state), do: {:noreply, state}

  @impl GenServer
  def terminate(_reason, %{stubborn: true}), do: Process.sleep(:infinity)
  def terminate(_reason, _state), do: :ok

  @impl Synod.Handover
  def handover(old_state, new_state), do: %{new_state | count: old_state.count}
end

defmodule Synod.Test.RemoteHub do
  @moduledoc false
  # Functions the hub tests run on peers through :erpc (compiled, so they
  # exist on every peer).

  alias Synod.Test.HubWorker

  @doc "Starts a hub not linked to the calling (short-lived) erpc process."
  def start_hub(opts) do
    {:ok, pid} = Synod.start_link(opts)
    Process.unlink(pid)
    {:ok, pid}
  end

  def stop_hub(hub), do: Synod.stop(hub)

  def spec(id), do: %{id: id, start: {HubWorker, :start_link, [id]}}
  def spec(id, extra), do: %{id: id, start: {HubWorker, :start_link, [id, extra]}}

  def ids(prefix, n), do: for(i <- 1..n, do: "#{prefix}-#{i}")

  def start_many(hub, prefix, n, opts \\ []) do
    Synod.start_children(hub, Enum.map(ids(prefix, n), &spec/1), opts)
  end

  @doc """
  How many rows this node's registry holds, those with no copy anywhere
  (which `Synod.children/2` leaves out) included.
  """
  def registry_size(hub) do
    {registry, _meta} = :persistent_term.get({Synod.Hub, hub})
    :ets.info(registry, :size)
  end

  @doc "Child ids that really run on this node (from the processes themselves)."
  def running_ids(hub) do
    for {_, pid, _, _} <- DynamicSupervisor.which_children(:"#{hub}.children"),
        is_pid(pid),
        {:dictionary, dict} <- [Process.info(pid, :dictionary)] do
      Keyword.fetch!(dict, :synod_test_id)
    end
  end

  @doc "This node's raw registry row for `id` (`nil` when it has none): tells a row with no copies from a missing row."
  def raw_row(hub, id) do
    {registry, _} = :persistent_term.get({Synod.Hub, hub})

    case :ets.lookup(registry, id) do
      [{^id, _spec, _meta, pids}] ->
        {:row, for(pid <- Synod.Hub.Registry.copies(pids), do: {node(pid), pid})}

      [] ->
        nil
    end
  end

  @doc "Owners of each id under this node's ring."
  def owners(hub, ids), do: Map.new(ids, &{&1, Synod.owners(hub, &1)})

  @doc "Starts a subscriber here that forwards hub events to `target`."
  def forward_events(hub, target, events \\ :all) do
    parent = self()

    pid =
      spawn(fn ->
        :ok = Synod.subscribe(hub, events)
        send(parent, :subscribed)
        forward(target)
      end)

    receive do
      :subscribed -> {:ok, pid}
    after
      5_000 -> {:error, :timeout}
    end
  end

  defp forward(target) do
    receive do
      msg ->
        send(target, {:forwarded, node(), msg})
        forward(target)
    end
  end

  @doc "Cuts this node from `other` (the other side must cut too, with a different cookie)."
  def cut(other, cookie) do
    :erlang.set_cookie(other, cookie)
    :erlang.disconnect_node(other)
    :ok
  end

  def heal(other) do
    :erlang.set_cookie(other, :erlang.get_cookie())
    :ok
  end

  def worker_state(pid), do: GenServer.call(pid, :state)
end

defmodule Synod.Test.Wait do
  @moduledoc false
  # Bounded polling: waits for a condition instead of sleeping and hoping.

  def until(fun, timeout \\ 10_000, interval \\ 20) do
    deadline = System.monotonic_time(:millisecond) + timeout
    loop(fun, deadline, interval)
  end

  defp loop(fun, deadline, interval) do
    case fun.() do
      result when result not in [false, nil] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          raise ExUnit.AssertionError, message: "condition not met in time"
        else
          Process.sleep(interval)
          loop(fun, deadline, interval)
        end
    end
  end
end

defmodule Synod.Test.HubHandle do
  @moduledoc false
  def start_then_await(hub, specs, opts) do
    {:ok, handle} = Synod.start_children(hub, specs, [await: false] ++ opts)
    {:ok, Synod.await(handle)}
  end
end

defmodule Synod.Test.FakeMember do
  @moduledoc false
  # A hub member spoken by hand: a process registered under the hub's name
  # on a peer node, which forwards every message it receives to a test as
  # `{:fake, node, message}`. The test sends the member's side of
  # docs/protocol.md itself, so it decides the exact order in which a real
  # coordinator sees each message.

  @doc "Registers a forwarder as `hub` on this node; returns its pid."
  def start(hub, test) do
    parent = self()

    pid =
      spawn(fn ->
        Process.register(self(), hub)
        send(parent, :registered)
        forward(test)
      end)

    receive do
      :registered -> pid
    after
      5_000 -> exit(:not_registered)
    end
  end

  defp forward(test) do
    receive do
      msg ->
        send(test, {:fake, node(), msg})
        forward(test)
    end
  end
end
