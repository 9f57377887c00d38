defmodule Synod.Raft.Info do
  @moduledoc false
  # Owns the ETS table through which `Synod.leader/1`, `leader?/1` and
  # `term/1` are answered without a message to the member: each member writes
  # its view (role, leader, term) on every change, readers look it up. A row
  # names the member's pid, and a row whose member is gone answers "no
  # leader", so a crashed member never looks like a leader. Every view's
  # leader also feeds Synod.Raft.Router's cache (the member's leader watch).

  use GenServer

  alias Synod.Raft.Router
  alias Synod.Stray

  @table __MODULE__

  def start_link(_), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @impl true
  def init([]) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    {:ok, nil}
  end

  # It owns the table and takes no input: every call, cast and message is
  # stray (Synod.Stray; a crash here would take every member's view with it).
  @impl true
  def handle_call(request, from, state),
    do: Stray.call(request, from, state, "raft info", false, fn _, _, s -> {:noreply, s} end)

  @impl true
  def handle_cast(request, state), do: Stray.cast(request, state, "raft info")

  @impl true
  def handle_info(msg, state) do
    Stray.ignored("raft info", :message, msg)
    {:noreply, state}
  end

  @doc "Records the member's view; its leader also goes to the node's leader cache."
  @spec put(atom(), pid(), map()) :: true
  def put(group, pid, view) do
    if view.leader, do: Router.learn(group, view.leader), else: Router.forget(group)
    :ets.insert(@table, {group, pid, view})
  end

  @spec delete(atom(), pid()) :: true
  def delete(group, pid), do: :ets.match_delete(@table, {group, pid, :_})

  @doc "The member's view, or nil when no live member of `group` runs here."
  @spec view(atom()) :: map() | nil
  def view(group) do
    case :ets.lookup(@table, group) do
      [{^group, pid, view}] -> if Process.alive?(pid), do: view
      [] -> nil
    end
  rescue
    ArgumentError -> nil
  end
end
