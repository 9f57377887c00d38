defmodule Synod.Raft.Wal.Pending do
  @moduledoc false
  # A `log: :wal` member's writes in flight, as data: which Ready (its core
  # seq, raft.h "ASYNCHRONOUS PERSISTENCE") waits for which WAL append (the
  # seq the member gave Synod.Raft.Wal.append/6), so that a WAL notice
  # {:synod_wal_synced, S} becomes one raft_persisted(R, Seq). The member
  # only carries these out.
  #
  #   written/4   a Ready's records were handed to the WAL as append
  #               `wal_seq`; or `nil`: the Ready wrote nothing of its own
  #               (its records went out with an earlier append), so it is
  #               durable once everything before it is; or `:buffered`: its
  #               records sit in a stuck member's buffer (a full disk), so
  #               only durable/1 covers them
  #   synced/2    the WAL's notice S: every append of this member with a
  #               seq <= S is durable (the WAL writes a member's appends in
  #               the order it sent them)
  #   durable/1   everything written so far is durable (a synchronous sync
  #               succeeded: the full-disk retry, a snapshot install)
  #
  # Each returns `{confirm, infos, pending}`: `confirm` the highest core seq
  # now durable (nil: none newly), to hand to raft_persisted (which confirms
  # every earlier seq too); `infos` the terms given to written/4 of the
  # writes now durable, oldest first (the member's telemetry). A confirmed
  # core seq is never returned twice, and core seqs only go up.

  defstruct queue: :queue.new(), confirmed: 0

  @opaque t :: %__MODULE__{queue: :queue.queue(), confirmed: non_neg_integer()}
  @type result :: {pos_integer() | nil, [term()], t()}

  @doc "No writes in flight."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "The number of Readies not yet durable."
  @spec size(t()) :: non_neg_integer()
  def size(%__MODULE__{queue: q}), do: :queue.len(q)

  @doc "A Ready with core seq `seq` handed to the WAL as `wal_seq` (or nil)."
  @spec written(t(), pos_integer(), integer() | nil | :buffered, term()) :: result()
  def written(%__MODULE__{queue: q} = p, seq, wal_seq, info \\ nil)
      when is_integer(seq) and seq > 0 do
    take(%{p | queue: :queue.in({seq, wal_seq, info}, q)}, fn
      nil -> true
      _ -> false
    end)
  end

  @doc "The WAL's notice: this member's appends up to `wal_seq` are durable."
  @spec synced(t(), integer()) :: result()
  def synced(p, wal_seq) when is_integer(wal_seq) do
    take(p, fn
      nil -> true
      :buffered -> false
      w -> w <= wal_seq
    end)
  end

  @doc "Everything handed to written/4 so far is durable."
  @spec durable(t()) :: result()
  def durable(p), do: take(p, fn _ -> true end)

  # Pops the writes at the front that are durable; a write behind one that
  # is not waits for it (confirming a core seq confirms every earlier one).
  defp take(p, durable?), do: take(p, durable?, nil, [])

  defp take(%__MODULE__{queue: q} = p, durable?, top, infos) do
    case :queue.peek(q) do
      {:value, {seq, wal_seq, info}} ->
        if durable?.(wal_seq) do
          take(%{p | queue: :queue.drop(q)}, durable?, seq, [info | infos])
        else
          finish(p, top, infos)
        end

      :empty ->
        finish(p, top, infos)
    end
  end

  defp finish(p, nil, infos), do: {nil, Enum.reverse(infos), p}

  defp finish(%__MODULE__{confirmed: c} = p, top, infos) when top > c,
    do: {top, Enum.reverse(infos), %{p | confirmed: top}}

  defp finish(p, _top, infos), do: {nil, Enum.reverse(infos), p}
end
