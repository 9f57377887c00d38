defmodule Synod.Raft.Wal.Batch do
  @moduledoc false
  # The decisions of the shared write-ahead log (Synod.Raft.Wal), as data:
  # what goes into one batch, when the batch is written and fsynced, and whom
  # to tell that their records are durable. The process around it only
  # carries these out (one write, one fdatasync, one notice per member).
  #
  #   add/2     an append from a member joins the open batch (in arrival
  #             order: a member's records stay in the order it sent them)
  #   decide/3  :sync now, or :collect (more appends are already waiting in
  #             the mailbox and the batch is under its byte limit: take
  #             them first, so one fsync covers them all)
  #   cut/1     the batch as it goes to disk: the framed records (iodata, in
  #             order), the notices ({pid, seq}: the highest seq of each
  #             member in the batch, one notice per member), the segment
  #             files it touched ({dir, generation}), and its byte count

  alias Synod.Raft.Storage

  defstruct records: [], notices: %{}, segments: MapSet.new(), bytes: 0, count: 0

  @type t :: %__MODULE__{}
  @type append :: %{
          optional(:open) => true,
          pid: pid(),
          seq: integer(),
          dir: Path.t(),
          generation: non_neg_integer(),
          offset: non_neg_integer(),
          data: iodata()
        }
  @type cut :: %{
          iodata: iodata(),
          notices: [{pid(), integer()}],
          segments: [{Path.t(), non_neg_integer()}],
          bytes: non_neg_integer(),
          count: non_neg_integer()
        }

  @kind_append 1
  @max_data 64 * 1024 * 1024
  @kind_open 2

  @doc "An empty batch."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "Whether the batch holds nothing."
  @spec empty?(t()) :: boolean()
  def empty?(%__MODULE__{count: n}), do: n == 0

  @doc """
  Adds one member's append to the batch, framed as WAL records: one, or,
  when its bytes are over `max_data` (default 64 MiB, well under the
  record limit recovery enforces), one per `max_data` piece, each at its
  own offset (replay writes them one after the other: the same bytes).
  """
  @spec add(t(), append(), pos_integer()) :: t()
  def add(%__MODULE__{} = batch, %{pid: pid, seq: seq} = append, max_data \\ @max_data) do
    records =
      if IO.iodata_length(append.data) > max_data,
        do: Enum.map(pieces(append, max_data), &Storage.frame(body(&1))),
        else: [Storage.frame(body(append))]

    %{
      batch
      | records: [batch.records | records],
        notices: Map.update(batch.notices, pid, seq, &max(&1, seq)),
        segments: MapSet.put(batch.segments, {append.dir, append.generation}),
        bytes: batch.bytes + IO.iodata_length(records),
        count: batch.count + length(records)
    }
  end

  defp pieces(%{data: data, offset: offset} = append, max_data) do
    bin = IO.iodata_to_binary(data)

    for at <- 0..(byte_size(bin) - 1)//max_data do
      %{
        append
        | offset: offset + at,
          data: binary_part(bin, at, min(max_data, byte_size(bin) - at))
      }
    end
  end

  @doc """
  Sync now, or collect first: an empty batch waits; a batch at or over
  `max_bytes` syncs; otherwise it syncs only when no more messages wait in
  the mailbox (`queued`), since those are most likely appends that one fsync
  can cover too.
  """
  @spec decide(t(), non_neg_integer(), pos_integer()) :: :sync | :collect | :idle
  def decide(%__MODULE__{count: 0}, _queued, _max_bytes), do: :idle
  def decide(%__MODULE__{bytes: b}, _queued, max_bytes) when b >= max_bytes, do: :sync
  def decide(_batch, 0, _max_bytes), do: :sync
  def decide(_batch, _queued, _max_bytes), do: :collect

  @doc "The batch as it goes to disk, and whom to tell afterwards."
  @spec cut(t()) :: cut()
  def cut(%__MODULE__{} = batch) do
    %{
      iodata: batch.records,
      notices: Enum.sort(batch.notices),
      segments: Enum.sort(batch.segments),
      bytes: batch.bytes,
      count: batch.count
    }
  end

  @doc """
  A WAL record's body: <<1, dir_len::16, dir, generation::64, offset::64,
  data>>, where data is the bytes the member wrote at `offset` of its
  segment file `dir/log.<generation>` (Synod.Raft.Storage records); or,
  for an append with `open: true` (a member opened its files, and its
  log.<generation> is durable up to `offset`), <<2, dir_len::16, dir,
  generation::64, offset::64>>.
  """
  @spec body(append()) :: iodata()
  def body(%{open: true, dir: dir, generation: g, offset: o}),
    do: <<@kind_open, byte_size(dir)::16, dir::binary, g::64, o::64>>

  def body(%{dir: dir, generation: g, offset: o, data: data}) do
    [<<@kind_append, byte_size(dir)::16, dir::binary, g::64, o::64>>, data]
  end

  @doc "Decodes a WAL record's body."
  @spec decode(binary()) ::
          {:ok,
           %{
             optional(:open) => true,
             dir: Path.t(),
             generation: non_neg_integer(),
             offset: non_neg_integer(),
             data: binary()
           }}
          | :error
  def decode(<<@kind_append, len::16, dir::binary-size(len), g::64, o::64, data::binary>>),
    do: {:ok, %{dir: dir, generation: g, offset: o, data: data}}

  def decode(<<@kind_open, len::16, dir::binary-size(len), g::64, o::64>>),
    do: {:ok, %{open: true, dir: dir, generation: g, offset: o, data: <<>>}}

  def decode(_body), do: :error
end
