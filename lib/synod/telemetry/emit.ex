defmodule Synod.Telemetry.Emit do
  @moduledoc false
  # The small helpers through which the Raft driver, the store and the C
  # node supervisor emit their events (docs/observability.md has the table).
  # Each call site is one line; what an event carries is decided here, so
  # the processes that emit stay as they are. Nothing here may raise on a
  # value a caller passes: an event is never a reason for a process to stop.

  alias Synod.Telemetry

  @stale_check 50_000

  # -- raft -------------------------------------------------------------------------

  @doc """
  The role and leader events of a batch of member view changes, each
  `{type, cause, before, after}` with `before`/`after` maps holding `:role`,
  `:leader` (a node or nil) and `:term`.
  """
  @spec raft_changes(atom(), list()) :: :ok
  def raft_changes(group, changes) do
    Enum.each(changes, fn {_type, _cause, before, after_} ->
      if before.role != after_.role do
        Telemetry.execute([:synod, :raft, :role], %{term: after_.term}, %{
          group: group,
          node: node(),
          role: after_.role,
          previous: before.role
        })
      end

      if before.leader != after_.leader do
        Telemetry.execute([:synod, :raft, :leader], %{term: after_.term}, %{
          group: group,
          node: node(),
          leader: after_.leader,
          previous: before.leader
        })
      end
    end)
  end

  @doc """
  Whether an fsync event would reach a handler: if not, the driver reads no
  clock for it (`fsync/3` is not called).
  """
  @spec fsync?() :: boolean()
  def fsync?, do: Telemetry.attached?([:synod, :raft, :fsync])

  @doc """
  Whether a commit event would reach a handler: if not, the driver records
  no proposal times (so `commit/3` has none to report).
  """
  @spec commit?() :: boolean()
  def commit?, do: Telemetry.attached?([:synod, :raft, :commit])

  @doc "An fsync of `bytes` that started at `start` (native monotonic time)."
  @spec fsync(atom(), integer(), non_neg_integer()) :: :ok
  def fsync(group, start, bytes) do
    Telemetry.execute(
      [:synod, :raft, :fsync],
      %{duration: System.monotonic_time() - start, bytes: bytes},
      %{group: group, node: node()}
    )
  end

  @doc """
  Commit latency: `proposed` maps the indexes this member proposed to the
  monotonic time of their proposal; `committed` is the list of entries just
  applied (`{index, term, type, data}`). Emits one event for the batch when
  it holds a proposal of this member (latency: the oldest one's) and returns
  the proposals still waiting.
  """
  @spec commit(atom(), map(), list()) :: map()
  def commit(_group, proposed, []), do: proposed
  def commit(_group, proposed, _committed) when map_size(proposed) == 0, do: proposed

  def commit(group, proposed, committed) do
    {mine, rest} = Map.split(proposed, Enum.map(committed, &elem(&1, 0)))

    if map_size(mine) > 0 do
      Telemetry.execute(
        [:synod, :raft, :commit],
        %{
          latency: System.monotonic_time() - Enum.min(Map.values(mine)),
          entries: length(committed)
        },
        %{group: group, node: node()}
      )
    end

    # Proposals below the last applied index that were never applied (a
    # snapshot skipped them) would stay forever: drop them.
    # Checked only when many wait, so a batch costs O(its entries).
    {last, _, _, _} = List.last(committed)

    if map_size(rest) > @stale_check,
      do: Map.reject(rest, fn {i, _} -> i <= last end),
      else: rest
  end

  @doc "A snapshot at `index` of `bytes` bytes was installed (restored) by this member."
  @spec snapshot_installed(atom(), non_neg_integer(), non_neg_integer()) :: :ok
  def snapshot_installed(group, index, bytes) do
    Telemetry.execute([:synod, :raft, :snapshot, :installed], %{bytes: bytes}, %{
      group: group,
      node: node(),
      index: index
    })
  end

  # -- store --------------------------------------------------------------------------

  @doc "Runs a store request of `kind` and emits `[:synod, :store, :request]`; returns its result."
  @spec store_request(atom(), atom(), (() -> result)) :: result when result: term()
  def store_request(store, kind, fun) do
    if Telemetry.attached?([:synod, :store, :request]),
      do: timed_request(store, kind, fun),
      else: fun.()
  end

  defp timed_request(store, kind, fun) do
    start = System.monotonic_time()
    result = fun.()

    Telemetry.execute(
      [:synod, :store, :request],
      %{duration: System.monotonic_time() - start},
      %{store: store, kind: kind, result: if(match?({:error, _}, result), do: :error, else: :ok)}
    )

    result
  end

  @doc "Watch lag: the events the watches of `store` on this node are behind by."
  @spec watch_lag(atom(), non_neg_integer()) :: :ok
  def watch_lag(store, events) do
    Telemetry.execute([:synod, :store, :watch, :lag], %{events: events}, %{
      store: store,
      node: node()
    })
  end

  # -- C node ---------------------------------------------------------------------------

  @doc "The C node `cnode` is connected (`:up`) or not (`:down`)."
  @spec cnode_connection(node(), :up | :down) :: :ok
  def cnode_connection(cnode, state) do
    Telemetry.execute([:synod, :cnode, :connection], %{}, %{node: cnode, state: state})
  end

  @doc "A request of `kind` to the C node, covering `count` items (children, or 1)."
  @spec cnode_request(node(), atom(), non_neg_integer()) :: :ok
  def cnode_request(cnode, kind, count) do
    Telemetry.execute([:synod, :cnode, :request], %{count: count}, %{node: cnode, kind: kind})
  end
end
