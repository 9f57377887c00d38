defmodule Synod.Raft.StorageTest do
  use ExUnit.Case, async: true

  alias Synod.Raft.Storage

  @moduletag :tmp_dir

  defp entry(index, term, data \\ nil),
    do: %{index: index, term: term, type: 0, data: data || "cmd-#{index}"}

  defp hs(term, vote, commit), do: %{term: term, vote: vote, commit: commit}

  defp write_synced(dir, entries, hard_state) do
    {:ok, s, _} = Storage.open(dir)
    {:ok, s} = s |> Storage.write(entries, hard_state) |> Storage.sync()
    :ok = Storage.close(s)
  end

  defp reopen(dir) do
    case Storage.open(dir) do
      {:ok, s, recovered} ->
        Storage.close(s)
        recovered

      error ->
        error
    end
  end

  test "a fresh directory recovers an empty state", %{tmp_dir: dir} do
    assert %{hard_state: %{term: 0, vote: 0, commit: 0}, snapshot: nil, entries: []} = reopen(dir)
  end

  test "synced entries and hard state survive a restart", %{tmp_dir: dir} do
    entries = for i <- 1..50, do: entry(i, div(i, 10) + 1)
    write_synced(dir, entries, hs(6, 3, 40))
    assert %{hard_state: hs(6, 3, 40), entries: entries, snapshot: nil} == reopen(dir)
  end

  test "buffered records reach the file only on sync (group commit)", %{tmp_dir: dir} do
    {:ok, s, _} = Storage.open(dir)
    s = s |> Storage.write([entry(1, 1)], hs(1, 1, 0)) |> Storage.write([entry(2, 1)])
    assert Storage.pending_bytes(s) > 0
    assert File.stat!(Path.join(dir, "log.0")).size == 0
    {:ok, s} = Storage.sync(s)
    assert Storage.pending_bytes(s) == 0
    assert File.stat!(Path.join(dir, "log.0")).size > 0
    Storage.close(s)

    assert %{entries: [%{index: 1}, %{index: 2}], hard_state: %{term: 1, vote: 1, commit: 0}} =
             reopen(dir)
  end

  # Only a sync after a failed one checks the log's length (an lseek): the
  # failure marks the storage's suspect cell, and that sync cuts the bytes
  # a failed write left (when its own cut failed too) before it appends.
  test "a failed sync marks the log; the next sync cuts it to its good length first", %{
    tmp_dir: dir
  } do
    {:ok, s, _} = Storage.open(dir)
    {:ok, s} = s |> Storage.write([entry(1, 1)], hs(1, 1, 0)) |> Storage.sync()
    assert :atomics.get(s.suspect, 1) == 0
    good = File.stat!(Path.join(dir, "log.0")).size

    # A write that fails (here: its file is closed under it) marks the cell,
    # which every copy of the storage shares.
    {:ok, other} = :file.open(Path.join(dir, "other"), [:raw, :binary, :write])
    :ok = :file.close(other)
    broken = %{Storage.write(s, [entry(2, 1)]) | log: other}
    assert {:error, _} = Storage.sync(broken)
    assert :atomics.get(s.suspect, 1) == 1

    # As if that write's bytes had stayed: the next sync cuts them first.
    File.write!(Path.join(dir, "log.0"), "half a record", [:append])
    {:ok, s} = s |> Storage.write([entry(2, 1), entry(3, 1)], hs(1, 1, 2)) |> Storage.sync()
    assert :atomics.get(s.suspect, 1) == 0
    assert File.stat!(Path.join(dir, "log.0")).size > good
    Storage.close(s)

    assert %{entries: [%{index: 1}, %{index: 2}, %{index: 3}], hard_state: %{commit: 2}} =
             reopen(dir)
  end

  test "an entry replaces every entry at or after its index (Raft's conflict rule)", %{
    tmp_dir: dir
  } do
    write_synced(dir, for(i <- 1..5, do: entry(i, 1)), hs(1, 1, 2))
    write_synced(dir, [entry(3, 2, "new-3"), entry(4, 2, "new-4")], hs(2, 2, 2))
    assert %{entries: entries, hard_state: %{term: 2, vote: 2, commit: 2}} = reopen(dir)
    assert entries == [entry(1, 1), entry(2, 1), entry(3, 2, "new-3"), entry(4, 2, "new-4")]
  end

  test "a log cut at any byte recovers a prefix of what was written, and the file is truncated",
       %{tmp_dir: dir} do
    entries = for i <- 1..8, do: entry(i, 1, :binary.copy("x", i * 3))
    write_synced(dir, entries, hs(1, 1, 8))
    log = Path.join(dir, "log.0")
    full = File.read!(log)

    for cut <- 0..(byte_size(full) - 1) do
      File.write!(log, binary_part(full, 0, cut))
      assert %{entries: recovered} = reopen(dir), "cut at #{cut} did not recover"
      assert recovered == Enum.take(entries, length(recovered))
      # recovery truncated the torn record: the file now ends on a record boundary
      size = File.stat!(log).size
      assert size <= cut
      assert %{entries: ^recovered} = reopen(dir)
      assert File.stat!(log).size == size
    end
  end

  test "after a torn tail is truncated, new records append cleanly", %{tmp_dir: dir} do
    write_synced(dir, for(i <- 1..3, do: entry(i, 1)), nil)
    log = Path.join(dir, "log.0")
    File.write!(log, File.read!(log) <> <<0, 0, 0, 40, 1, 2>>)
    write_synced(dir, [entry(4, 1)], nil)
    assert %{entries: [_, _, _, %{index: 4}]} = reopen(dir)
  end

  test "a zero-filled tail is a torn write, not corruption", %{tmp_dir: dir} do
    write_synced(dir, [entry(1, 1)], nil)
    log = Path.join(dir, "log.0")
    File.write!(log, File.read!(log) <> :binary.copy(<<0>>, 4096))
    assert %{entries: [%{index: 1}]} = reopen(dir)
  end

  test "a last record whose body fails its checksum is a torn write", %{tmp_dir: dir} do
    write_synced(dir, [entry(1, 1), entry(2, 1)], nil)
    log = Path.join(dir, "log.0")
    bin = File.read!(log)
    File.write!(log, flip(bin, byte_size(bin) - 1))
    assert %{entries: [%{index: 1}]} = reopen(dir)
  end

  test "a corrupt record in the middle stops recovery with a clear error", %{tmp_dir: dir} do
    write_synced(dir, for(i <- 1..5, do: entry(i, 1)), nil)
    log = Path.join(dir, "log.0")
    bin = File.read!(log)
    record = div(byte_size(bin), 5)

    # a byte of the second record's body
    File.write!(log, flip(bin, record + 14))
    assert {:error, {:corrupt, ^log, ^record, "bad body checksum"}} = Storage.open(dir)
    # nothing was truncated away
    assert File.read!(log) == flip(bin, record + 14)

    # a byte of the second record's header
    File.write!(log, flip(bin, record + 1))
    assert {:error, {:corrupt, ^log, ^record, "bad header checksum"}} = Storage.open(dir)
  end

  test "a snapshot replaces the log and survives a restart", %{tmp_dir: dir} do
    {:ok, s, _} = Storage.open(dir)
    {:ok, s} = s |> Storage.write(for(i <- 1..10, do: entry(i, 1)), hs(1, 1, 8)) |> Storage.sync()
    snapshot = %{index: 6, term: 1, meta: "members", data: :binary.copy("state", 100)}

    {:ok, s} =
      Storage.install_snapshot(s, snapshot, hs(1, 1, 8), for(i <- 1..10, do: entry(i, 1)))

    {:ok, s} = s |> Storage.write([entry(11, 1)], hs(1, 1, 9)) |> Storage.sync()
    Storage.close(s)

    assert Enum.sort(File.ls!(dir)) == ["log.6", "snapshot.6"]

    assert %{snapshot: snap, entries: entries, hard_state: %{term: 1, vote: 1, commit: 9}} =
             reopen(dir)

    assert %{index: 6, term: 1, meta: "members", size: 500} = snap
    {:ok, s, _} = Storage.open(dir)
    assert Storage.read_snapshot_data(s, snap) == {:ok, snapshot.data}
    assert Storage.read_chunk(s, 6, 495, 5) == {:ok, "state"}
    Storage.close(s)

    assert Enum.map(entries, & &1.index) == [7, 8, 9, 10, 11]
  end

  test "a crash in the middle of installing a snapshot keeps the previous state", %{tmp_dir: dir} do
    write_synced(dir, for(i <- 1..4, do: entry(i, 1)), hs(1, 1, 4))
    # the snapshot file was written, its log never was
    File.write!(Path.join(dir, "snapshot.3"), "whatever was half written")
    File.write!(Path.join(dir, "log.3.tmp"), "partial")

    assert %{snapshot: nil, entries: entries} = reopen(dir)
    assert length(entries) == 4
    assert File.ls!(dir) == ["log.0"]
  end

  test "a damaged snapshot is reported, not served", %{tmp_dir: dir} do
    {:ok, s, _} = Storage.open(dir)

    {:ok, s} =
      Storage.install_snapshot(s, %{index: 2, term: 1, meta: "", data: "abc"}, hs(1, 1, 2), [])

    Storage.close(s)
    path = Path.join(dir, "snapshot.2")
    File.write!(path, flip(File.read!(path), 20))
    assert {:error, {:corrupt, ^path, 0, _}} = Storage.open(dir)
  end

  defp flip(bin, at) do
    <<before::binary-size(at), byte, rest::binary>> = bin
    <<before::binary, Bitwise.bxor(byte, 0xFF), rest::binary>>
  end

  test "a received chunk that cannot be written fails its transfer once: file gone, rest skipped, refused with the cause",
       %{tmp_dir: dir} do
    recv = Path.join(dir, "recv.snapshot")
    data = :binary.copy("0123456789abcdef", 3)
    crc = Storage.checksum(data)

    chunk = fn offset, len ->
      {5, 2, 48, crc, offset, binary_part(data, offset, len), offset + len == 48}
    end

    {:ok, s, _} = Storage.open(dir)

    {:ok, s} = Storage.write_chunk(s, chunk.(0, 16))
    assert File.stat!(recv).size == 16
    # a chunk the file cannot take (here: not at the offset it is at)
    assert {:error, {:unexpected_chunk, 32}, s} = Storage.write_chunk(s, chunk.(32, 16))
    refute File.exists?(recv)
    # the rest of that transfer is skipped, and its end refused with the cause
    assert {:ok, s} = Storage.write_chunk(s, chunk.(16, 16))
    refute File.exists?(recv)
    assert {{:error, {:write_failed, {:unexpected_chunk, 32}}}, s} = Storage.finish_receive(s)

    # a new transfer from offset 0 goes through
    {:ok, s} = Storage.write_chunk(s, chunk.(0, 16))
    {:ok, s} = Storage.write_chunk(s, chunk.(16, 16))
    {:ok, s} = Storage.write_chunk(s, chunk.(32, 16))
    assert {:ok, s} = Storage.finish_receive(s)
    assert File.read!(recv) == data
    Storage.close(s)
  end
end
