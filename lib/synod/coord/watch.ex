defmodule Synod.Coord.Watch do
  @moduledoc """
  Waiting on a `Synod.Store` watch instead of polling: until a key is
  deleted, or until anything under a prefix changes, bounded by a
  `Synod.Coord.Deadline`. Every wait ends its watch and drops what the
  watch already delivered, so nothing is left in the caller's mailbox.
  """

  alias Synod.Coord.Deadline
  alias Synod.Store

  @doc """
  Blocks until some key under `prefix` changes after `revision`, or until
  `deadline`. Returns `:changed` (also when the watch ended: the caller
  reads again), `:timeout` or `{:error, reason}` when the watch could not
  be set up.
  """
  @spec await_change(atom(), binary(), non_neg_integer(), Deadline.t(), keyword()) ::
          :changed | :timeout | {:error, term()}
  def await_change(store, prefix, revision, deadline, call) do
    watching(store, prefix, [prefix: true, from: revision + 1] ++ call, fn ref ->
      receive do
        {:synod_watch, ^ref, _} -> :changed
        {:DOWN, ^ref, :process, _, _} -> :changed
      after
        Deadline.remaining(deadline) -> :timeout
      end
    end)
  end

  @doc """
  Blocks until `key` is deleted at or after revision `from` (a delete that
  already happened is delivered too), or until `deadline`. Returns
  `:deleted`, `:recheck` when the watch ended (its server went away, or the
  history it needed was compacted: read again), `:timeout`, or
  `{:error, reason}` when the watch could not be set up.
  """
  @spec await_delete(atom(), binary(), pos_integer(), Deadline.t(), keyword()) ::
          :deleted | :recheck | :timeout | {:error, term()}
  def await_delete(store, key, from, deadline, call),
    do: watching(store, key, [from: from] ++ call, &deleted(&1, deadline))

  # Runs `wait.(ref)` on a new watch, then ends the watch.
  defp watching(store, key, opts, wait) do
    with {:ok, ref} <- Store.watch(store, key, opts) do
      result = wait.(ref)
      stop(store, ref)
      result
    end
  end

  defp deleted(ref, deadline) do
    receive do
      {:synod_watch, ^ref, events} when is_list(events) ->
        if Enum.any?(events, &(elem(&1, 0) == :delete)),
          do: :deleted,
          else: deleted(ref, deadline)

      {:synod_watch, ^ref, {:error, _}} ->
        :recheck

      {:DOWN, ^ref, :process, _, _} ->
        :recheck
    after
      Deadline.remaining(deadline) -> :timeout
    end
  end

  @doc "Ends a watch and drops whatever it already delivered to this process."
  @spec stop(atom(), reference()) :: :ok
  def stop(store, ref) do
    Store.unwatch(store, ref)
    Process.demonitor(ref, [:flush])
    flush(ref)
  end

  defp flush(ref) do
    receive do
      {:synod_watch, ^ref, _} -> flush(ref)
    after
      0 -> :ok
    end
  end
end
