defmodule Synod.Raft.Wal do
  @moduledoc false
  # One write-ahead log per node, shared by every Raft member on it that
  # runs with `log: :wal` (docs/raft.md, "One write-ahead log per node").
  # A member writes a Ready's records into its own segment file (its
  # Synod.Raft.Storage log.N) without fsync and hands the same bytes here;
  # this process writes the appends of every member that arrived together
  # in one write, fdatasyncs once, and then tells each member the highest
  # seq of its appends in that batch is durable ({:synod_wal_synced, Seq}).
  # What goes into a batch, when it is synced and whom to tell are decided
  # by Synod.Raft.Wal.Batch (pure); this process carries that out.
  #
  # Files, in the WAL's directory: wal.K (K = 1, 2, ...), records framed as
  # Synod.Raft.Storage's (<<len::32, body_crc::32, header_crc::32, body>>),
  # body as Synod.Raft.Wal.Batch.body/1: the member's dir, the generation N
  # of its segment log.N, the offset the bytes went to, the bytes.
  #
  # Truncation (the checkpoint): once wal.K is over `max_file_bytes` the
  # process starts wal.K+1, fdatasyncs every segment file wal.K had records
  # for (any fd of a file flushes its pages), then deletes wal.K: what it
  # held is durable in the segments.
  #
  # Recovery (init, before any member with `log: :wal` opens its files;
  # Synod.Raft.Member calls ensure_started/2 first): every wal.K in order is
  # read; a record cut short or failing its CRC at the very end of the last
  # file is the tail of a batch that never finished (never acknowledged):
  # ignored. Anything else that fails a check refuses to start with
  # {:corrupt, File, Offset, Why}. Each record is then written again into
  # its segment: the bytes at their offset, the file cut right after them
  # (what a segment held past its last durable record was never promised);
  # a segment file that no longer exists (a later snapshot replaced that
  # generation, or the group's files were deleted) is skipped. The touched
  # segments are fdatasynced, the WAL files deleted, a fresh wal.K+1 begun.
  #
  # A write or fsync that fails (a full disk) is cut back to the last good
  # length and retried with the same batch (appends that arrive meanwhile
  # join it) every 50 ms doubling to 2 s; the members wait for their notice
  # meanwhile.

  use GenServer
  require Logger

  alias Synod.Raft.Storage
  alias Synod.Raft.Wal.Batch
  alias Synod.Stray

  @max_batch_bytes 4 * 1024 * 1024
  @max_file_bytes 64 * 1024 * 1024
  @retry_min 50
  @retry_max 2_000

  defstruct [
    :dir,
    :fd,
    :file_no,
    :max_file_bytes,
    file_bytes: 0,
    batch: nil,
    # segments ({dir, generation}) with records in the current file
    segments: MapSet.new(),
    retry: nil,
    stats: %{syncs: 0, records: 0, bytes: 0, rolls: 0, replayed: 0}
  ]

  @doc """
  Starts this node's WAL in `dir` (under Synod.Raft.WalSupervisor), or
  returns the running one. `{:error, {:wal_dir, running}}` when it runs in
  another directory; `{:error, {:corrupt, file, offset, why}}` when
  recovery refuses a damaged file. Returns only once recovery has finished.
  Options: `max_file_bytes:` (default 64 MiB), when to start a new file.
  """
  @spec ensure_started(Path.t(), keyword()) :: {:ok, pid()} | {:error, term()}
  def ensure_started(dir, opts \\ []) do
    dir = Path.expand(dir)

    spec = %{
      id: __MODULE__,
      start: {__MODULE__, :start_link, [Keyword.put(opts, :dir, dir)]},
      restart: :temporary
    }

    pid =
      case Process.whereis(__MODULE__) do
        nil ->
          case DynamicSupervisor.start_child(Synod.Raft.WalSupervisor, spec) do
            {:ok, pid} -> pid
            {:error, {:already_started, pid}} -> pid
            {:error, why} -> {:error, why}
          end

        pid ->
          pid
      end

    with pid when is_pid(pid) <- pid do
      # Answered only after init (recovery) is done.
      case GenServer.call(pid, :dir, :infinity) do
        ^dir -> {:ok, pid}
        other -> {:error, {:wal_dir, other}}
      end
    end
  catch
    :exit, why -> {:error, {:wal, why}}
  end

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc """
  Hands `data` (bytes the caller wrote at `offset` of `dir/log.<generation>`)
  to the WAL; the caller gets {:synod_wal_synced, S} with S >= seq once it
  is durable.
  """
  @spec append(pid(), integer(), Path.t(), non_neg_integer(), non_neg_integer(), iodata()) ::
          :ok
  def append(wal, seq, dir, generation, offset, data) do
    send(wal, {:wal_append, self(), seq, dir, generation, offset, data})
    :ok
  end

  @doc """
  Tells the WAL that the caller opened its files and its
  `dir/log.<generation>` is durable up to `size` bytes (it fdatasynced
  it): recovery then drops every earlier record for `dir` and cuts that
  file at `size` before the later records. The caller gets
  {:synod_wal_synced, S} with S >= seq once this is durable.
  """
  @spec opened(pid(), integer(), Path.t(), non_neg_integer(), non_neg_integer()) :: :ok
  def opened(wal, seq, dir, generation, size) do
    send(wal, {:wal_open, self(), seq, dir, generation, size})
    :ok
  end

  @doc "Counters: fdatasyncs of the WAL, records, bytes, rolls, records replayed at start."
  @spec stats() :: map() | nil
  def stats do
    case Process.whereis(__MODULE__) do
      nil -> nil
      pid -> GenServer.call(pid, :stats)
    end
  end

  # -- the process --------------------------------------------------------------

  @impl true
  def init(opts) do
    dir = Keyword.fetch!(opts, :dir)

    with :ok <- File.mkdir_p(dir),
         {:ok, files} <- wal_files(dir),
         {:ok, records} <- read_all(files),
         {:ok, replayed} <- replay(records),
         :ok <- remove(dir, files) do
      next = Enum.max(Enum.map(files, &elem(&1, 0)), fn -> 0 end) + 1

      if replayed > 0,
        do: Logger.info("raft wal #{dir}: #{replayed} records replayed into their segments")

      state = %__MODULE__{
        dir: dir,
        max_file_bytes: Keyword.get(opts, :max_file_bytes, @max_file_bytes),
        batch: Batch.new()
      }

      case open_file(state, next) do
        {:ok, state} -> {:ok, put_in(state.stats.replayed, replayed)}
        {:error, why} -> {:stop, {:wal_open, dir, why}}
      end
    else
      {:error, why} -> {:stop, why}
    end
  end

  @impl true
  def handle_info({:wal_append, pid, seq, dir, generation, offset, data}, state)
      when is_pid(pid) and is_integer(seq) do
    append = %{pid: pid, seq: seq, dir: dir, generation: generation, offset: offset, data: data}
    {:noreply, maybe_sync(%{state | batch: Batch.add(state.batch, append)})}
  end

  def handle_info({:wal_open, pid, seq, dir, generation, size}, state)
      when is_pid(pid) and is_integer(seq) do
    append = %{
      open: true,
      pid: pid,
      seq: seq,
      dir: dir,
      generation: generation,
      offset: size,
      data: <<>>
    }

    {:noreply, maybe_sync(%{state | batch: Batch.add(state.batch, append)})}
  end

  def handle_info(:retry, state), do: {:noreply, write_batch(%{state | retry: nil})}

  def handle_info(msg, state) do
    Stray.ignored(fn -> "raft wal" end, :message, msg)
    {:noreply, maybe_sync(state)}
  end

  @impl true
  def handle_call(request, from, state) do
    {reply, state} =
      case request do
        :dir -> {state.dir, state}
        :stats -> {Map.put(state.stats, :file, state.file_no), state}
        _ -> {{:error, {:bad_request, request}}, state}
      end

    GenServer.reply(from, reply)
    {:noreply, maybe_sync(state)}
  end

  @impl true
  def handle_cast(request, state) do
    Stray.ignored(fn -> "raft wal" end, :cast, request)
    {:noreply, maybe_sync(state)}
  end

  defp maybe_sync(%{retry: ref} = state) when ref != nil, do: state

  defp maybe_sync(state) do
    {:message_queue_len, queued} = Process.info(self(), :message_queue_len)

    case Batch.decide(state.batch, queued, @max_batch_bytes) do
      :sync -> write_batch(state)
      _ -> state
    end
  end

  defp write_batch(state) do
    cut = Batch.cut(state.batch)
    test_delay()

    with :ok <- :file.write(state.fd, cut.iodata),
         :ok <- :file.datasync(state.fd) do
      for {pid, seq} <- cut.notices, do: send(pid, {:synod_wal_synced, seq})

      stats = %{
        state.stats
        | syncs: state.stats.syncs + 1,
          records: state.stats.records + cut.count,
          bytes: state.stats.bytes + cut.bytes
      }

      %{
        state
        | batch: Batch.new(),
          file_bytes: state.file_bytes + cut.bytes,
          segments: MapSet.union(state.segments, MapSet.new(cut.segments)),
          stats: stats
      }
      |> maybe_roll()
    else
      {:error, why} -> write_failed(state, why)
    end
  end

  # The bytes of a failed write or fsync are cut off; the same batch (and
  # what joins it) is written again later, never built upon.
  defp write_failed(state, why) do
    _ = with {:ok, _} <- :file.position(state.fd, state.file_bytes), do: :file.truncate(state.fd)
    backoff = next_backoff(state)
    Stray.warn("raft wal #{state.dir}: cannot write (#{inspect(why)}), retrying in #{backoff} ms")
    Process.send_after(self(), :retry, backoff)
    %{state | retry: backoff}
  end

  defp next_backoff(%{retry: nil}), do: @retry_min
  defp next_backoff(%{retry: ms}), do: min(ms * 2, @retry_max)

  defp maybe_roll(%{file_bytes: b, max_file_bytes: max} = state) when b < max, do: state

  defp maybe_roll(state) do
    old = {state.file_no, file(state.dir, state.file_no)}
    :file.close(state.fd)

    with :ok <- sync_segments(state.segments),
         {:ok, state} <- open_file(state, state.file_no + 1),
         :ok <- remove(state.dir, [old]) do
      put_in(state.stats.rolls, state.stats.rolls + 1)
    else
      {:error, why} -> exit({:wal_roll, state.dir, why})
    end
  end

  # Test builds only (MIX_ENV=test): test/elixir/raft_wal_crash_test.exs
  # widens the window between a batch's arrival and its write by setting the
  # persistent term {Synod.Raft.Wal, :delay_ms}, so a kill -9 finds records
  # not yet written (a member that did not wait for its notice would then
  # lose acknowledged entries). Other builds compile this to nothing.
  if Mix.env() == :test do
    defp test_delay do
      case :persistent_term.get({__MODULE__, :delay_ms}, 0) do
        0 -> :ok
        ms -> Process.sleep(ms)
      end
    end
  else
    defp test_delay, do: :ok
  end

  defp open_file(state, n) do
    path = file(state.dir, n)

    with {:ok, fd} <- :file.open(path, [:raw, :binary, :append]),
         :ok <- :synod_nif.fsync_dir(state.dir) do
      {:ok, %{state | fd: fd, file_no: n, file_bytes: 0, segments: MapSet.new()}}
    end
  end

  # fdatasync through a new fd: it flushes the file's pages whoever wrote
  # them. A segment that is gone was replaced by a later generation, which
  # was written durably.
  defp sync_segments(segments) do
    Enum.reduce_while(segments, :ok, fn {dir, g}, :ok ->
      case :file.open(segment(dir, g), [:raw, :binary, :read]) do
        {:ok, f} ->
          result = :file.datasync(f)
          :file.close(f)
          if result == :ok, do: {:cont, :ok}, else: {:halt, result}

        {:error, :enoent} ->
          {:cont, :ok}

        {:error, _} = error ->
          {:halt, error}
      end
    end)
  end

  # -- recovery ------------------------------------------------------------------

  defp wal_files(dir) do
    with {:ok, names} <- File.ls(dir) do
      files =
        for name <- names,
            ["wal", digits] <- [String.split(name, ".")],
            {n, ""} <- [Integer.parse(digits)],
            do: {n, Path.join(dir, name)}

      {:ok, Enum.sort(files)}
    end
  end

  defp read_all(files) do
    last = length(files) - 1

    files
    |> Enum.with_index()
    |> Enum.reduce_while({:ok, []}, fn {{_n, path}, i}, {:ok, acc} ->
      case File.read(path) do
        {:ok, bin} ->
          case read_records(bin, 0, path, i == last, acc) do
            {:ok, acc} -> {:cont, {:ok, acc}}
            error -> {:halt, error}
          end

        {:error, why} ->
          {:halt, {:error, {why, path}}}
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      error -> error
    end
  end

  defp read_records(bin, offset, _path, _last?, acc) when offset == byte_size(bin), do: {:ok, acc}

  defp read_records(bin, offset, path, last?, acc) do
    case Storage.read_record(bin, offset) do
      {:ok, body, next} ->
        case Batch.decode(body) do
          {:ok, record} -> read_records(bin, next, path, last?, [record | acc])
          :error -> {:error, {:corrupt, path, offset, "unknown record"}}
        end

      :torn when last? ->
        {:ok, acc}

      :torn ->
        {:error, {:corrupt, path, offset, "cut short, and it is not the last WAL file"}}

      {:corrupt, why} ->
        {:error, {:corrupt, path, offset, why}}
    end
  end

  # A member's open record (it opened its files, its log durable up to
  # there) makes every earlier record of that dir moot: those before it are
  # dropped (a dir deleted and made again by a new group does not get the
  # old group's records), and the open cuts the file at its offset.
  defp replay(records) do
    indexed = Enum.with_index(records)
    last_open = for {%{open: true, dir: dir}, i} <- indexed, into: %{}, do: {dir, i}
    records = for {rec, i} <- indexed, i >= Map.get(last_open, rec.dir, -1), do: rec

    result =
      Enum.reduce_while(records, {:ok, %{}, 0}, fn rec, {:ok, open, n} ->
        path = segment(rec.dir, rec.generation)

        case fd_for(open, path) do
          {:ok, nil, open} ->
            {:cont, {:ok, open, n}}

          {:ok, fd, open} ->
            case write_at(fd, rec.offset, rec.data) do
              :ok -> {:cont, {:ok, open, n + 1}}
              {:error, why} -> {:halt, {:error, {:wal_replay, path, why}, open}}
            end

          {:error, why} ->
            {:halt, {:error, {:wal_replay, path, why}, open}}
        end
      end)

    case result do
      {:ok, open, n} ->
        case close_all(open) do
          :ok -> {:ok, n}
          error -> error
        end

      {:error, why, open} ->
        _ = close_all(open)
        {:error, why}
    end
  end

  defp fd_for(open, path) do
    case open do
      %{^path => fd} ->
        {:ok, fd, open}

      _ ->
        # Only existing segments are written (opening with :write would
        # create one).
        if File.exists?(path) do
          case :file.open(path, [:raw, :binary, :read, :write]) do
            {:ok, fd} -> {:ok, fd, Map.put(open, path, fd)}
            {:error, _} = error -> error
          end
        else
          {:ok, nil, open}
        end
    end
  end

  # The bytes at their offset, and the file cut right after them.
  defp write_at(fd, offset, data) do
    with :ok <- :file.pwrite(fd, offset, data),
         {:ok, _} <- :file.position(fd, offset + byte_size(data)),
         do: :file.truncate(fd)
  end

  defp close_all(open) do
    Enum.reduce(open, :ok, fn {_path, fd}, acc ->
      result = :file.datasync(fd)
      :file.close(fd)
      if acc == :ok, do: result, else: acc
    end)
  end

  defp remove(dir, files) do
    Enum.each(files, fn {_n, path} -> File.rm!(path) end)
    if files == [], do: :ok, else: :synod_nif.fsync_dir(dir)
  end

  defp file(dir, n), do: Path.join(dir, "wal.#{n}")
  defp segment(dir, g), do: Path.join(dir, "log.#{g}")
end
