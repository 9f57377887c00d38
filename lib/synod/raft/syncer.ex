defmodule Synod.Raft.Syncer do
  @moduledoc false
  # The fdatasync of one `log: :files` member's own log file, in a process
  # beside the member (`fsync_writer: true`; docs/raft.md "64 clients (issue
  # 18, branch raft64)"), so the member keeps stepping while its records
  # reach the disk, as a `log: :wal` member does with the node's WAL.
  #
  # The member writes a Ready's records into its log file itself
  # (Storage.flush/1: write(2), no fsync) and then sends
  #
  #   {:synod_sync, Seq, LogPath}
  #
  # The syncer takes every such request in its mailbox, fdatasyncs each
  # log file they name once (through its own fd: an fsync flushes the
  # file's pages whoever wrote them, and the member's write returned before
  # its request was sent), and answers the member with the WAL's notice,
  # `{:synod_wal_synced, HighestSeq}`: every write the member handed over
  # with a seq <= HighestSeq is durable. The member maps it back to its
  # core's seq (Synod.Raft.Wal.Pending) and calls raft_persisted; the core
  # (async_persist) decides what waits for that.
  #
  # A log file that no longer exists was replaced by a snapshot install,
  # which the member made durable before it deleted the file (and which
  # carries every entry after the snapshot and the hard state): its writes
  # are durable, and the notice is sent. Any other open or fdatasync error
  # stops the syncer, and with it the member (they are linked): the member
  # restarts from its files, as after a crash. Nothing it had not fsynced
  # was promised to anyone (the core held those messages back).
  #
  # It stops with the member (a monitor: a member that stops `:normal`
  # sends no exit signal through the link).

  @doc "Starts the syncer of the calling member, linked to it."
  @spec start_link() :: pid()
  def start_link do
    member = self()

    spawn_link(fn ->
      ref = Process.monitor(member)
      loop(member, ref, nil)
    end)
  end

  @doc "Asks `syncer` to make the caller's writes up to `seq` in `path` durable."
  @spec sync(pid(), integer(), Path.t()) :: :ok
  def sync(syncer, seq, path) do
    send(syncer, {:synod_sync, seq, path})
    :ok
  end

  # `open` is nil or {Path, Fd}: the log file of the last request.
  defp loop(member, ref, open) do
    receive do
      {:synod_sync, seq, path} ->
        {seq, paths} = take(seq, [path])
        open = Enum.reduce(Enum.reverse(paths), open, &datasync/2)
        send(member, {:synod_wal_synced, seq})
        loop(member, ref, open)

      {:DOWN, ^ref, :process, _, _} ->
        close(open)
    end
  end

  # Every request already queued: the highest seq, the distinct paths
  # (newest first) in the order they were written.
  defp take(seq, paths) do
    receive do
      {:synod_sync, s, path} ->
        take(max(s, seq), if(hd(paths) == path, do: paths, else: [path | paths]))
    after
      0 -> {seq, paths}
    end
  end

  defp datasync(path, {path, fd} = open) do
    case :file.datasync(fd) do
      :ok -> open
      {:error, why} -> exit({:fsync_failed, path, why})
    end
  end

  defp datasync(path, open) do
    close(open)

    case :file.open(path, [:raw, :binary, :read]) do
      {:ok, fd} -> datasync(path, {path, fd})
      {:error, :enoent} -> nil
      {:error, why} -> exit({:fsync_failed, path, why})
    end
  end

  defp close(nil), do: :ok
  defp close({_, fd}), do: :file.close(fd)
end
