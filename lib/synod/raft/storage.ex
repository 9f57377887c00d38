defmodule Synod.Raft.Storage do
  @moduledoc false
  # Durable state of one Raft member: hard state (term, vote, commit), log
  # entries after the latest snapshot, and that snapshot. The Raft driver owns
  # one of these; this module owns the files and nothing else (no timers, no
  # messages). What the core requires (c_src/raft.h, "THE DRIVER LOOP"):
  # persist and fsync a Ready's snapshot, entries and hard state, in that
  # order, and fsync them when the Ready says so (must_sync), before its
  # other messages leave the process. A Ready that only moves the commit
  # index asks for no fsync: its hard state waits in memory and goes to disk
  # with the next sync (or at close); a crash before that recovers an older
  # commit index, which is safe (c_src/raft.h, "THE PERSISTENCE RULE").
  #
  # Files, in the member's directory, named by the snapshot index N they
  # follow (N = 0 before the first snapshot):
  #
  #   log.N        append-only records (below). Group commit: `write/3` only
  #                buffers; `sync/1` writes the buffer (the entries, then the
  #                latest hard state) and fdatasyncs once.
  #   snapshot.N   the snapshot at index N: its data (the state machine's
  #                bytes, `size` of them, read in chunks at any offset), then
  #                a trailer (below).
  #   recv.snapshot a snapshot being received in chunks (written without
  #                fsync until its last chunk; deleted when the member opens,
  #                and as soon as its transfer fails)
  #
  # Installing snapshot N writes snapshot.N, then log.N (each to a .tmp file,
  # fsync, rename, fsync the directory), then deletes the older pair.
  # Recovery uses the highest N whose log.N exists (and snapshot.N, for
  # N > 0); a crash mid-install leaves a snapshot.N without its log.N, which
  # is ignored and removed: the install did not happen, and since the driver
  # syncs before it answers, nobody was told it did.
  #
  # A record is
  #
  #   <<len::32, body_crc::32, header_crc::32, body::binary-size(len)>>
  #
  # with CRC-32 (IEEE) over the body, and over the first 8 header bytes. The
  # body is <<kind::8, ...>>:
  #
  #   1 hard state   <<term::64, vote::64, commit::64>>
  #   2 entry        <<index::64, term::64, type::8, data::binary>>
  #
  # A snapshot file is <<data::binary-size(size), trailer, trailer_len::32,
  # "SYNS">> with trailer = <<index::64, term::64, size::64, checksum::64,
  # meta_len::32, meta, trailer_crc::32>> (CRC-32 over the trailer before
  # it); `checksum` is the CRC-32 of the data, checked when the file is
  # opened and when a received file is complete. The data is never loaded
  # by `open/1`: the driver reads it in chunks (`read_chunk/4`) or whole to
  # restore its machine (`read_snapshot_data/1`).
  #
  # An entry at index i replaces every entry at or after i (Raft's conflict
  # rule), so replay needs no separate truncation record.
  #
  # Recovery reads records in order. A damaged record at the end of the log
  # (a header or body cut short, or a body that fails its CRC and ends exactly
  # at the end of the file) is the tail of a write that never finished: the
  # file is truncated there and recovery goes on. Anything else that fails a
  # check (a bad header CRC followed by non-zero bytes, a bad body CRC with
  # more records after it, a gap in entry indexes) is corruption: `open/1`
  # returns `{:error, {:corrupt, file, offset, why}}` and serves nothing.
  #
  # A write that fails (a full disk: ENOSPC, EDQUOT, EIO) loses nothing and
  # leaves no partial record: `sync/1` returns `{:error, why}` and the
  # storage it was given still holds the whole buffer, so the driver retries
  # with it. `size` is the length of the log that is known good (everything
  # synced); a retry first truncates the file back to it (truncating needs
  # no free space), so the bytes of a short write, or of a write whose fsync
  # failed (Linux may drop such pages and report success on the next fsync),
  # are written again in full, never built upon. Only a sync after a failed
  # one looks at the file's length (an lseek): a failure marks the log's
  # `suspect` cell (an :atomics shared by every copy of the struct, since the
  # driver retries with the storage it passed in, not a returned one), and
  # the next sync that finds it marked checks and cuts the length first,
  # then clears it. A sync after good ones appends at once (the log is
  # opened in append mode; its length is `size`). A snapshot install that
  # failed is deferred (`defer_install/4`): the next `sync/1` installs it
  # first, then writes what was buffered after it.

  defstruct [
    :dir,
    :log,
    :log_path,
    :generation,
    :pending_hs,
    :deferred,
    :recv,
    # :atomics cell, 1 when a write or fsync failed since the last good sync
    # (nil: always check the length)
    :suspect,
    # the snapshot file a leader is sending, kept open across its chunks:
    # nil or {index, fd, last_used_ms}
    :send,
    size: 0,
    pending: [],
    pending_bytes: 0
  ]

  @type t :: %__MODULE__{}
  @type hard_state :: %{
          term: non_neg_integer(),
          vote: non_neg_integer(),
          commit: non_neg_integer()
        }
  @type entry :: %{index: pos_integer(), term: non_neg_integer(), type: 0..255, data: binary()}
  @type snapshot :: %{
          required(:index) => non_neg_integer(),
          required(:term) => non_neg_integer(),
          required(:meta) => binary(),
          required(:size) => non_neg_integer(),
          required(:checksum) => non_neg_integer(),
          optional(:data) => iodata(),
          optional(:path) => Path.t(),
          optional(:received) => true
        }
  @type recovered :: %{hard_state: hard_state(), snapshot: snapshot() | nil, entries: [entry()]}

  @header 12
  @kind_hard_state 1
  @kind_entry 2
  @snap_magic "SYNS"
  @recv_file "recv.snapshot"
  @read_block 4 * 1024 * 1024
  @max_record 256 * 1024 * 1024

  @doc "Opens (creating if needed) the storage in `dir` and recovers its state."
  @spec open(Path.t()) :: {:ok, t(), recovered()} | {:error, term()}
  def open(dir) do
    with :ok <- File.mkdir_p(dir),
         _ <- File.rm(Path.join(dir, @recv_file)),
         {:ok, generation} <- current_generation(dir),
         :ok <- remove_other_generations(dir, generation),
         {:ok, snapshot} <- read_snapshot(dir, generation),
         log_path = file(dir, "log", generation),
         {:ok, hard_state, entries, valid_bytes} <- read_log(log_path, snapshot),
         :ok <- truncate(log_path, valid_bytes),
         {:ok, log} <- :file.open(log_path, [:raw, :binary, :append, :read]) do
      recovered = %{hard_state: hard_state, snapshot: snapshot, entries: entries}

      {:ok,
       %__MODULE__{
         dir: dir,
         log: log,
         log_path: log_path,
         generation: generation,
         suspect: :atomics.new(1, signed: false),
         size: valid_bytes
       }, recovered}
    end
  end

  @doc """
  Writes what is buffered (a hard state that only moved the commit index)
  without an fsync, and closes the log file.
  """
  @spec close(t()) :: :ok
  def close(%__MODULE__{log: log, deferred: nil} = storage) do
    close_send(storage)

    with :ok <- at_good_length(log, storage.size), do: :file.write(log, buffered(storage))
    :file.close(log)
  end

  # What was buffered after a snapshot that could not be installed follows
  # that snapshot, not this log: it is not written (none of it was promised).
  def close(%__MODULE__{log: log} = storage) do
    close_send(storage)
    :file.close(log)
  end

  @doc """
  Buffers a Ready's log entries and hard state (either may be empty/nil).
  Only the latest hard state is kept: it supersedes the earlier ones.
  Nothing is on disk until `sync/1`.
  """
  @spec write(t(), [entry()], hard_state() | nil) :: t()
  def write(storage, entries, hard_state \\ nil) do
    records = Enum.map(entries, &entry_record/1)
    bytes = Enum.reduce(records, 0, &(IO.iodata_length(&1) + &2))

    %{
      storage
      | pending: [storage.pending | records],
        pending_bytes: storage.pending_bytes + bytes,
        pending_hs: hard_state || storage.pending_hs
    }
  end

  @doc "The size of the current log file on disk, in bytes (0 if it cannot be read)."
  @spec log_bytes(t()) :: non_neg_integer()
  def log_bytes(%__MODULE__{log_path: path}) do
    case File.stat(path) do
      {:ok, %{size: size}} -> size
      _ -> 0
    end
  end

  @doc "Bytes buffered by `write/3` and not yet synced."
  @spec pending_bytes(t()) :: non_neg_integer()
  def pending_bytes(%__MODULE__{pending_bytes: n, pending_hs: nil}), do: n
  def pending_bytes(%__MODULE__{pending_bytes: n}), do: n + @header + 25

  @doc """
  Writes everything buffered (entries, then the latest hard state) and
  fdatasyncs the log once (group commit). Only after this returns
  `{:ok, storage}` may the messages that depend on those records be sent.
  """
  #
  # On `{:error, why}` nothing that was buffered is lost: the storage passed
  # in still holds it, and a later `sync/1` of that same storage writes it
  # again from the last good length of the log (see the top of the file).
  @spec sync(t()) :: {:ok, t()} | {:error, term()}
  def sync(%__MODULE__{deferred: {_, _, _}} = storage) do
    with {:ok, installed} <- install_deferred(storage), do: sync(installed)
  end

  def sync(%__MODULE__{pending_bytes: 0, pending_hs: nil} = storage), do: {:ok, storage}

  def sync(%__MODULE__{log: log, size: size, suspect: suspect} = storage) do
    data = buffered(storage)

    with :ok <- checked_length(log, size, suspect),
         :ok <- write_or_undo(log, size, data, suspect),
         :ok <- datasync_or_undo(log, size, suspect) do
      {:ok,
       %{
         storage
         | pending: [],
           pending_bytes: 0,
           pending_hs: nil,
           size: size + IO.iodata_length(data)
       }}
    end
  end

  @doc """
  The shared write-ahead log's half of `sync/1` (`Synod.Raft.Wal`,
  docs/raft.md "One write-ahead log per node"): writes everything buffered
  (as `sync/1` would, the same records) but does not fsync; durability is
  the WAL's. Returns what was written, `{generation, offset, data}` (the log
  file log.N it went to, where in it, and the bytes), for the WAL record, or
  `nil` when nothing was buffered. A deferred snapshot install is performed
  first, durably, as in `sync/1`. On `{:error, why}` the storage passed in
  still holds the whole buffer, as with `sync/1`.
  """
  @spec flush(t()) ::
          {:ok, t(), {non_neg_integer(), non_neg_integer(), iodata()} | nil}
          | {:error, term()}
  def flush(%__MODULE__{deferred: {_, _, _}} = storage) do
    with {:ok, installed} <- install_deferred(storage), do: flush(installed)
  end

  def flush(%__MODULE__{pending_bytes: 0, pending_hs: nil} = storage), do: {:ok, storage, nil}

  def flush(%__MODULE__{log: log, size: size, suspect: suspect} = storage) do
    data = buffered(storage)

    with :ok <- checked_length(log, size, suspect),
         :ok <- write_or_undo(log, size, data, suspect) do
      written = %{
        storage
        | pending: [],
          pending_bytes: 0,
          pending_hs: nil,
          size: size + IO.iodata_length(data)
      }

      {:ok, written, {storage.generation, size, data}}
    end
  end

  @doc """
  fdatasyncs the current log file as it is (nothing buffered is written):
  with the shared WAL, a member does this once when it opens, so the log it
  recovered is durable before any WAL record points past its end.
  """
  @spec sync_file(t()) :: :ok | {:error, term()}
  def sync_file(%__MODULE__{log: log}), do: :file.datasync(log)

  @doc false
  # The record framing, for Synod.Raft.Wal (its records are framed alike).
  @spec frame(iodata()) :: iodata()
  def frame(body), do: record(body)

  @doc false
  # Reads the framed record at `offset` of `bin`:
  # {:ok, body, next_offset} | :torn | {:corrupt, why}.
  @spec read_record(binary(), non_neg_integer()) ::
          {:ok, binary(), non_neg_integer()} | :torn | {:corrupt, String.t()}
  def read_record(bin, offset), do: next_record(bin, offset)

  @doc """
  Keeps a snapshot install that failed (`install_snapshot/4` returned an
  error) for the next `sync/1`, which performs it before anything buffered
  after it. The install supersedes what was buffered before it (its log
  holds `hard_state` and `entries`), so that is dropped.
  """
  @spec defer_install(t(), snapshot(), hard_state(), [entry()]) :: t()
  def defer_install(storage, snapshot, hard_state, entries) do
    %{
      storage
      | deferred: {snapshot, hard_state, entries},
        pending: [],
        pending_bytes: 0,
        pending_hs: nil
    }
  end

  # A deferred snapshot install (defer_install/4), performed durably before
  # anything buffered after it; the buffer is carried over to the result.
  defp install_deferred(%__MODULE__{deferred: {snapshot, hard_state, entries}} = storage) do
    with {:ok, installed} <-
           install_snapshot(%{storage | deferred: nil}, snapshot, hard_state, entries) do
      {:ok,
       %{
         installed
         | pending: storage.pending,
           pending_bytes: storage.pending_bytes,
           pending_hs: storage.pending_hs
       }}
    end
  end

  # The log ends where the last good sync left it: the bytes of a failed
  # write or fsync after that point are cut off before anything is appended.
  # Only after a failure (see the top of the file): the lseek of
  # at_good_length/2 costs a syscall per sync.
  defp checked_length(log, size, suspect) when suspect != nil do
    case :atomics.get(suspect, 1) do
      0 ->
        :ok

      _ ->
        with :ok <- at_good_length(log, size), do: :atomics.put(suspect, 1, 0)
    end
  end

  defp checked_length(log, size, nil), do: at_good_length(log, size)

  defp at_good_length(log, size) do
    case :file.position(log, :eof) do
      {:ok, ^size} -> :ok
      {:ok, _longer} -> cut(log, size)
      {:error, _} = error -> error
    end
  end

  defp write_or_undo(log, size, data, suspect) do
    case :file.write(log, data) do
      :ok -> :ok
      {:error, _} = error -> undo(log, size, suspect, error)
    end
  end

  defp datasync_or_undo(log, size, suspect) do
    case :file.datasync(log) do
      :ok -> :ok
      {:error, _} = error -> undo(log, size, suspect, error)
    end
  end

  # Marked before the cut, which may fail too: the next sync checks again.
  defp undo(log, size, suspect, error) do
    if suspect, do: :atomics.put(suspect, 1, 1)
    _ = cut(log, size)
    error
  end

  defp cut(log, size) do
    with {:ok, _} <- :file.position(log, size), do: :file.truncate(log)
  end

  defp buffered(%__MODULE__{pending: pending, pending_hs: nil}), do: pending

  defp buffered(%__MODULE__{pending: pending, pending_hs: hs}),
    do: [pending, hard_state_record(hs)]

  @doc """
  Installs a snapshot durably, then rewrites the log to hold only
  `hard_state` and the entries after the snapshot. Safe at any crash point: a
  recovered log never holds entries at or below the snapshot's index.
  """
  @spec install_snapshot(t(), snapshot(), hard_state(), [entry()]) ::
          {:ok, t()} | {:error, term()}
  def install_snapshot(storage, %{index: n} = snapshot, hard_state, entries_after)
      when n > storage.generation do
    %__MODULE__{dir: dir, log: log} = storage
    later = Enum.filter(entries_after, &(&1.index > n))
    log_body = [Enum.map(later, &entry_record/1), hard_state_record(hard_state)]

    storage = close_send(storage)

    with :ok <- write_snapshot_file(storage, snapshot),
         :ok <- write_durably(dir, file(dir, "log", n), log_body),
         :ok <- :file.close(log),
         :ok <- remove_other_generations(dir, n),
         log_path = file(dir, "log", n),
         {:ok, log} <- :file.open(log_path, [:raw, :binary, :append, :read]) do
      {:ok,
       %{
         storage
         | log: log,
           log_path: log_path,
           generation: n,
           size: IO.iodata_length(log_body),
           pending: [],
           pending_bytes: 0,
           pending_hs: nil
       }}
    end
  end

  # A snapshot from compaction carries its data, or was streamed to a file
  # by `write_snapshot_data/3` (`written:` its path); a received one is in
  # recv.snapshot (complete, fsynced and checked by `finish_receive/1`).
  # A file's trailer is appended, it is fsynced and renamed into place.
  defp write_snapshot_file(%__MODULE__{dir: dir}, %{index: n, written: path} = snap),
    do: seal_snapshot_file(dir, path, file(dir, "snapshot", n), snap)

  defp write_snapshot_file(%__MODULE__{dir: dir}, %{index: n, data: data} = snap) do
    snap =
      snap
      |> Map.put_new_lazy(:size, fn -> IO.iodata_length(data) end)
      |> Map.put_new_lazy(:checksum, fn -> checksum(data) end)

    write_durably(dir, file(dir, "snapshot", n), [data, snapshot_trailer(snap)])
  end

  defp write_snapshot_file(%__MODULE__{dir: dir}, %{index: n, received: true} = snap),
    do: seal_snapshot_file(dir, Path.join(dir, @recv_file), file(dir, "snapshot", n), snap)

  defp seal_snapshot_file(dir, from, to, snap) do
    with {:ok, f} <- :file.open(from, [:raw, :binary, :read, :write]),
         {:ok, size} <- :file.position(f, :eof),
         true <- size == snap.size || {:error, {:received_size, size, snap.size}},
         :ok <- :file.write(f, snapshot_trailer(snap)),
         :ok <- :file.sync(f),
         :ok <- :file.close(f),
         :ok <- :file.rename(from, to) do
      :synod_nif.fsync_dir(dir)
    end
  end

  @doc """
  Where a snapshot at `index` is streamed to before it is installed (a
  `.tmp` file: removed at open and by every install).
  """
  @spec snapshot_tmp_path(t(), pos_integer()) :: Path.t()
  def snapshot_tmp_path(%__MODULE__{dir: dir}, index), do: file(dir, "snapshot", index) <> ".tmp"

  @doc """
  Streams a snapshot's data to `path`: `prefix`, then every binary `next`
  returns until `:eof`, one at a time (the data is never whole in memory).
  Not fsynced: `install_snapshot/4` with `written: path` appends the
  trailer, fsyncs and renames it. Returns the size and CRC-32 of the data;
  a file that could not be written is removed. Runs in any process (it
  opens the file itself).
  """
  @spec write_snapshot_data(Path.t(), iodata(), (() -> binary() | :eof)) ::
          {:ok, non_neg_integer(), non_neg_integer()} | {:error, term()}
  def write_snapshot_data(path, prefix, next) do
    with {:ok, f} <- :file.open(path, [:raw, :binary, :write]) do
      result =
        with :ok <- :file.write(f, prefix),
             do: write_pieces(f, next, IO.iodata_length(prefix), checksum(prefix))

      closed = :file.close(f)

      case result do
        {:ok, _, _} when closed == :ok ->
          result

        _ ->
          _ = :file.delete(path)
          if match?({:ok, _, _}, result), do: closed, else: result
      end
    end
  end

  defp write_pieces(f, next, size, crc) do
    case next.() do
      :eof ->
        {:ok, size, crc}

      piece when is_binary(piece) ->
        with :ok <- :file.write(f, piece),
             do: write_pieces(f, next, size + byte_size(piece), :erlang.crc32(crc, piece))
    end
  end

  defp snapshot_trailer(%{index: i, term: t, size: size, checksum: c, meta: m}) do
    body = <<i::64, t::64, size::64, c::64, byte_size(m)::32, m::binary>>
    trailer = <<body::binary, :erlang.crc32(body)::32>>
    [trailer, <<byte_size(trailer)::32>>, @snap_magic]
  end

  @doc "The CRC-32 of iodata, as snapshot checksums are computed."
  @spec checksum(iodata()) :: non_neg_integer()
  def checksum(iodata), do: :erlang.crc32(iodata)

  @doc """
  Reads `len` bytes at `offset` of the data of snapshot `index` (the current
  one): one chunk for a follower.
  """
  @spec read_chunk(t(), pos_integer(), non_neg_integer(), non_neg_integer()) ::
          {:ok, binary()} | {:error, term()}
  def read_chunk(%__MODULE__{dir: dir}, index, offset, len) do
    path = file(dir, "snapshot", index)

    with {:ok, f} <- :file.open(path, [:raw, :binary, :read]) do
      result =
        case :file.pread(f, offset, len) do
          {:ok, bin} when byte_size(bin) == len -> {:ok, bin}
          {:ok, bin} -> {:error, {:short_read, path, offset, byte_size(bin)}}
          :eof when len == 0 -> {:ok, <<>>}
          other -> {:error, {other, path, offset}}
        end

      :file.close(f)
      result
    end
  end

  @doc """
  `read_chunk/4` for a leader sending chunks: the file stays open across
  them (one open per transfer, not one per chunk) until `done_sending/1`
  (after a transfer's last chunk), `close_idle_send/2`, an install or
  `close/1`.
  """
  @spec send_chunk(t(), pos_integer(), non_neg_integer(), non_neg_integer()) ::
          {{:ok, binary()} | {:error, term()}, t()}
  def send_chunk(%__MODULE__{dir: dir} = storage, index, offset, len) do
    path = file(dir, "snapshot", index)

    case send_fd(storage, index, path) do
      {:ok, f, storage} ->
        case :file.pread(f, offset, len) do
          {:ok, bin} when byte_size(bin) == len ->
            {{:ok, bin}, storage}

          {:ok, bin} ->
            {{:error, {:short_read, path, offset, byte_size(bin)}}, close_send(storage)}

          :eof when len == 0 ->
            {{:ok, <<>>}, storage}

          other ->
            {{:error, {other, path, offset}}, close_send(storage)}
        end

      {:error, why, storage} ->
        {{:error, {why, path}}, storage}
    end
  end

  defp send_fd(%__MODULE__{send: {index, f, _}} = storage, index, _path),
    do: {:ok, f, %{storage | send: {index, f, now_ms()}}}

  defp send_fd(storage, index, path) do
    storage = close_send(storage)

    case :file.open(path, [:raw, :binary, :read]) do
      {:ok, f} -> {:ok, f, %{storage | send: {index, f, now_ms()}}}
      {:error, why} -> {:error, why, storage}
    end
  end

  @doc "After a transfer's last chunk: closes the file kept open for sending."
  @spec done_sending(t()) :: t()
  def done_sending(storage), do: close_send(storage)

  @doc """
  Closes the snapshot file kept open for sending if no chunk was read from
  it for `idle_ms`. Returns whether one is still open.
  """
  @spec close_idle_send(t(), non_neg_integer()) :: {boolean(), t()}
  def close_idle_send(%__MODULE__{send: {_, _, used}} = storage, idle_ms) do
    if now_ms() - used >= idle_ms, do: {false, close_send(storage)}, else: {true, storage}
  end

  def close_idle_send(storage, _idle_ms), do: {false, storage}

  @doc "Whether a snapshot file is open for sending."
  @spec sending?(t()) :: boolean()
  def sending?(%__MODULE__{send: send}), do: send != nil

  defp close_send(%__MODULE__{send: {_, f, _}} = storage) do
    _ = :file.close(f)
    %{storage | send: nil}
  end

  defp close_send(storage), do: storage

  defp now_ms, do: System.monotonic_time(:millisecond)

  @doc """
  Opens the data of the current snapshot to read it in pieces
  (`pread_snapshot/3`: a machine that restores from pieces never has it
  whole). Close it with `close_snapshot/1`.
  """
  @spec open_snapshot(t(), snapshot()) :: {:ok, {term(), Path.t()}} | {:error, term()}
  def open_snapshot(%__MODULE__{dir: dir}, %{index: n}) do
    path = file(dir, "snapshot", n)

    case :file.open(path, [:raw, :binary, :read]) do
      {:ok, f} -> {:ok, {f, path}}
      {:error, why} -> {:error, {:corrupt, path, 0, "snapshot unreadable: #{inspect(why)}"}}
    end
  end

  @doc "Reads exactly `len` bytes at `offset` of an opened snapshot's data."
  @spec pread_snapshot({term(), Path.t()}, non_neg_integer(), non_neg_integer()) ::
          {:ok, binary()} | {:error, term()}
  def pread_snapshot(_reader, _offset, 0), do: {:ok, <<>>}

  def pread_snapshot({f, path}, offset, len) do
    case :file.pread(f, offset, len) do
      {:ok, bin} when byte_size(bin) == len ->
        {:ok, bin}

      other ->
        {:error,
         {:corrupt, path, offset, "snapshot data unreadable: #{inspect(other, limit: 5)}"}}
    end
  end

  @doc "Closes an opened snapshot."
  @spec close_snapshot({term(), Path.t()}) :: :ok
  def close_snapshot({f, _path}) do
    _ = :file.close(f)
    :ok
  end

  @doc "The whole data of the current snapshot (to restore the machine)."
  @spec read_snapshot_data(t(), snapshot()) :: {:ok, binary()} | {:error, term()}
  def read_snapshot_data(%__MODULE__{dir: dir}, %{index: n, size: size}),
    do: read_data(file(dir, "snapshot", n), size)

  defp read_data(path, size) do
    with {:ok, f} <- :file.open(path, [:raw, :binary, :read]) do
      result =
        case :file.pread(f, 0, size) do
          {:ok, bin} when byte_size(bin) == size -> {:ok, bin}
          :eof when size == 0 -> {:ok, <<>>}
          other -> {:error, {:corrupt, path, 0, "snapshot data unreadable: #{inspect(other)}"}}
        end

      :file.close(f)
      result
    end
  end

  @doc """
  Writes one received chunk into recv.snapshot (offset 0 starts a new
  file). Chunks arrive in order (the core hands out only the one at the
  offset it expects); they are written without fsync. `finish_receive/1`
  after the last one fsyncs the file and checks size and checksum.

  A chunk that cannot be written (a full disk, a read-only dir) fails the
  whole transfer: `{:error, why, storage}` once, the partial file is
  deleted at once (its space is the member's again, for its log), and the
  later chunks of that transfer are skipped (`{:ok, storage}`, nothing to
  report twice); `finish_receive/1` then refuses it with
  `{:write_failed, why}`, and the core has the leader start over.
  """
  @spec write_chunk(t(), tuple()) :: {:ok, t()} | {:error, term(), t()}
  def write_chunk(storage, {index, term, size, checksum, 0, _data, _last} = chunk) do
    storage = abort_receive(storage)
    path = Path.join(storage.dir, @recv_file)

    case :file.open(path, [:raw, :binary, :write]) do
      {:ok, f} ->
        recv = %{fd: f, index: index, term: term, size: size, checksum: checksum, at: 0, crc: 0}
        append_chunk(%{storage | recv: recv}, chunk)

      {:error, why} ->
        {:error, why, fail_receive(storage, index, term, why)}
    end
  end

  def write_chunk(%__MODULE__{recv: %{at: at} = recv} = storage, {i, t, _, _, at, _, _} = chunk)
      when i == recv.index and t == recv.term,
      do: append_chunk(storage, chunk)

  def write_chunk(%__MODULE__{recv: %{failed: _} = recv} = storage, {i, t, _, _, _, _, _})
      when i == recv.index and t == recv.term,
      do: {:ok, storage}

  def write_chunk(storage, {i, t, _, _, offset, _, _}) do
    why = {:unexpected_chunk, offset}
    {:error, why, fail_receive(storage, i, t, why)}
  end

  defp append_chunk(%__MODULE__{recv: recv} = storage, {_, _, _, _, at, data, _}) do
    case :file.write(recv.fd, data) do
      :ok ->
        recv = %{recv | at: at + byte_size(data), crc: :erlang.crc32(recv.crc, data)}
        {:ok, %{storage | recv: recv}}

      {:error, why} ->
        {:error, why, fail_receive(storage, recv.index, recv.term, why)}
    end
  end

  defp fail_receive(storage, index, term, why) do
    storage = abort_receive(storage)
    %{storage | recv: %{failed: why, index: index, term: term}}
  end

  @doc """
  After the last chunk: fsyncs recv.snapshot and checks its size and
  checksum. `:ok` means it may be installed (the core is then told so).
  """
  @spec finish_receive(t()) :: {:ok | {:error, term()}, t()}
  def finish_receive(%__MODULE__{recv: %{failed: why}} = storage),
    do: {{:error, {:write_failed, why}}, %{storage | recv: nil}}

  def finish_receive(%__MODULE__{recv: %{fd: f} = recv} = storage) do
    result =
      with :ok <- :file.sync(f),
           :ok <- :file.close(f) do
        cond do
          recv.at != recv.size -> {:error, {:size, recv.at, recv.size}}
          recv.crc != recv.checksum -> {:error, {:checksum, recv.crc, recv.checksum}}
          true -> :ok
        end
      end

    if result != :ok, do: File.rm(Path.join(storage.dir, @recv_file))
    {result, %{storage | recv: nil}}
  end

  def finish_receive(storage), do: {{:error, :no_transfer}, storage}

  # A transfer given up: its file goes (a new one starts at offset 0).
  defp abort_receive(%__MODULE__{recv: %{fd: f}} = storage) do
    :file.close(f)
    File.rm(Path.join(storage.dir, @recv_file))
    %{storage | recv: nil}
  end

  defp abort_receive(storage), do: %{storage | recv: nil}

  # -- records ---------------------------------------------------------------

  defp record(body) do
    len = IO.iodata_length(body)
    head = <<len::32, :erlang.crc32(body)::32>>
    [head, <<:erlang.crc32(head)::32>>, body]
  end

  defp hard_state_record(%{term: t, vote: v, commit: c}),
    do: record(<<@kind_hard_state, t::64, v::64, c::64>>)

  defp entry_record(%{index: i, term: t, type: ty, data: d}),
    do: record([<<@kind_entry, i::64, t::64, ty::8>>, d])

  # Reads one record at `offset` of `bin`. {:ok, body, next} | :torn | {:corrupt, why}
  defp next_record(bin, offset) do
    rest = byte_size(bin) - offset

    cond do
      rest < @header ->
        :torn

      true ->
        <<_::binary-size(offset), len::32, body_crc::32, header_crc::32, _::binary>> = bin

        cond do
          :erlang.crc32(<<len::32, body_crc::32>>) != header_crc ->
            if zeros?(bin, offset), do: :torn, else: {:corrupt, "bad header checksum"}

          len > @max_record ->
            {:corrupt, "record length #{len} over the limit"}

          rest - @header < len ->
            :torn

          true ->
            body = binary_part(bin, offset + @header, len)
            next = offset + @header + len

            cond do
              :erlang.crc32(body) == body_crc -> {:ok, body, next}
              next == byte_size(bin) -> :torn
              true -> {:corrupt, "bad body checksum"}
            end
        end
    end
  end

  defp zeros?(bin, offset) do
    tail = binary_part(bin, offset, byte_size(bin) - offset)
    tail == :binary.copy(<<0>>, byte_size(tail))
  end

  # -- recovery --------------------------------------------------------------

  # The highest N with a log.N (and a snapshot.N when N > 0).
  defp current_generation(dir) do
    with {:ok, names} <- File.ls(dir) do
      generations = for name <- names, {"log", n} <- [generation_of(name)], do: n

      complete = Enum.filter(generations, &(&1 == 0 or File.exists?(file(dir, "snapshot", &1))))

      {:ok, Enum.max(complete, fn -> 0 end)}
    end
  end

  defp remove_other_generations(dir, keep) do
    with {:ok, names} <- File.ls(dir) do
      for name <- names,
          {_, n} <- [generation_of(name)],
          n != keep,
          do: File.rm!(Path.join(dir, name))

      for name <- names, String.ends_with?(name, ".tmp"), do: File.rm!(Path.join(dir, name))
      :synod_nif.fsync_dir(dir)
    end
  end

  defp generation_of(name) do
    with [kind, digits] when kind in ["log", "snapshot"] <- String.split(name, "."),
         {n, ""} <- Integer.parse(digits) do
      {kind, n}
    else
      _ -> :none
    end
  end

  defp file(dir, kind, n), do: Path.join(dir, "#{kind}.#{n}")

  defp read_snapshot(_dir, 0), do: {:ok, nil}

  defp read_snapshot(dir, generation) do
    path = file(dir, "snapshot", generation)

    with {:ok, f} <- open_read(path) do
      result = read_trailer(f, path)
      :file.close(f)

      with {:ok, snap} <- result,
           :ok <- check_data(path, snap) do
        {:ok, Map.put(snap, :path, path)}
      end
    end
  end

  defp open_read(path) do
    case :file.open(path, [:raw, :binary, :read]) do
      {:ok, f} -> {:ok, f}
      {:error, reason} -> {:error, {reason, path}}
    end
  end

  defp read_trailer(f, path) do
    corrupt = fn why -> {:error, {:corrupt, path, 0, why}} end

    with {:ok, file_size} when file_size >= 8 <- :file.position(f, :eof),
         {:ok, <<tlen::32, @snap_magic>>} <- :file.pread(f, file_size - 8, 8),
         true <- tlen >= 40 and tlen <= file_size - 8,
         {:ok, <<body::binary-size(tlen - 4), crc::32>>} <-
           :file.pread(f, file_size - 8 - tlen, tlen),
         true <- :erlang.crc32(body) == crc || :bad_crc,
         <<i::64, t::64, size::64, c::64, mlen::32, m::binary-size(mlen)>> <- body,
         true <- size == file_size - 8 - tlen || :bad_size do
      {:ok, %{index: i, term: t, size: size, checksum: c, meta: m}}
    else
      :bad_crc -> corrupt.("snapshot trailer fails its CRC")
      :bad_size -> corrupt.("snapshot data cut short")
      _ -> corrupt.("not a snapshot file")
    end
  end

  # The data against its checksum, read in blocks (never whole).
  defp check_data(path, %{size: size, checksum: c}) do
    with {:ok, f} <- open_read(path) do
      crc = crc_blocks(f, 0, size, 0)
      :file.close(f)

      if crc == c,
        do: :ok,
        else: {:error, {:corrupt, path, 0, "snapshot data fails its checksum"}}
    end
  end

  defp crc_blocks(_f, at, size, crc) when at >= size, do: crc

  defp crc_blocks(f, at, size, crc) do
    case :file.pread(f, at, min(@read_block, size - at)) do
      {:ok, bin} -> crc_blocks(f, at + byte_size(bin), size, :erlang.crc32(crc, bin))
      _ -> -1
    end
  end

  defp read_log(path, snapshot) do
    bin =
      case File.read(path) do
        {:ok, bin} -> bin
        {:error, :enoent} -> <<>>
      end

    floor = if snapshot, do: snapshot.index, else: 0
    empty = %{term: 0, vote: 0, commit: 0}
    replay(bin, 0, path, floor, empty, %{})
  end

  defp replay(bin, offset, path, floor, hard_state, entries) do
    case next_record(bin, offset) do
      {:ok, body, next} ->
        case decode(body) do
          {:hard_state, hs} ->
            replay(bin, next, path, floor, hs, entries)

          {:entry, %{index: i} = e} ->
            entries = if i > floor, do: drop_from(entries, i) |> Map.put(i, e), else: entries
            replay(bin, next, path, floor, hard_state, entries)

          :error ->
            {:error, {:corrupt, path, offset, "unknown record"}}
        end

      :torn ->
        with {:ok, list} <- contiguous(entries, floor, path) do
          {:ok, hard_state, list, offset}
        end

      {:corrupt, why} ->
        {:error, {:corrupt, path, offset, why}}
    end
  end

  defp decode(<<@kind_hard_state, t::64, v::64, c::64>>),
    do: {:hard_state, %{term: t, vote: v, commit: c}}

  defp decode(<<@kind_entry, i::64, t::64, ty::8, d::binary>>) when i > 0,
    do: {:entry, %{index: i, term: t, type: ty, data: d}}

  defp decode(_), do: :error

  defp drop_from(entries, index), do: Map.reject(entries, fn {i, _} -> i >= index end)

  defp contiguous(entries, floor, path) do
    list = entries |> Map.values() |> Enum.sort_by(& &1.index)

    case list do
      [] ->
        {:ok, []}

      [%{index: first} | _] ->
        last = first + length(list) - 1

        cond do
          last != List.last(list).index ->
            {:error, {:corrupt, path, :entries, "gap in entry indexes"}}

          floor > 0 and first != floor + 1 ->
            {:error, {:corrupt, path, :entries, "entries do not follow the snapshot"}}

          true ->
            {:ok, list}
        end
    end
  end

  # -- files -----------------------------------------------------------------

  defp truncate(path, valid_bytes) do
    case File.stat(path) do
      {:ok, %{size: size}} when size > valid_bytes ->
        with {:ok, f} <- :file.open(path, [:raw, :binary, :read, :write]),
             {:ok, _} <- :file.position(f, valid_bytes),
             :ok <- :file.truncate(f),
             :ok <- :file.sync(f) do
          :file.close(f)
        end

      _ ->
        :ok
    end
  end

  defp write_durably(dir, path, iodata) do
    tmp = path <> ".tmp"

    with {:ok, f} <- :file.open(tmp, [:raw, :binary, :write]),
         :ok <- write_sync_close(f, tmp, iodata),
         :ok <- :file.rename(tmp, path) do
      :synod_nif.fsync_dir(dir)
    end
  end

  # A file that could not be written whole is removed: no partial snapshot
  # or log is left behind, and its space is given back.
  defp write_sync_close(f, tmp, iodata) do
    with :ok <- :file.write(f, iodata),
         :ok <- :file.sync(f) do
      :file.close(f)
    else
      error ->
        _ = :file.close(f)
        _ = :file.delete(tmp)
        error
    end
  end
end
