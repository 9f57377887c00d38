defmodule Synod.Store.SnapshotStreamTest do
  # Streamed store snapshots (docs/store.md, "Streaming snapshots"): the
  # same bytes as a whole snapshot, written while the store keeps applying,
  # and restored from a real file in pieces without the snapshot ever being
  # whole in memory.
  use ExUnit.Case, async: false

  alias Synod.Raft.Storage
  alias Synod.Store.{Command, Machine}

  @meta %{index: 1, term: 1}
  @keys 24_000
  @value_bytes 1024
  # the snapshot is above this, so "well below it" means something
  @at_least 24 * 1024 * 1024

  setup do
    dir = Path.join(System.tmp_dir!(), "synod_snapstream_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  defp fill(store, keys) do
    for i <- 1..keys do
      value = :binary.copy(<<rem(i, 251)>>, @value_bytes)
      {^store, {:ok, _, _}} = Machine.apply(@meta, Command.put("key/#{i}", value), store)
    end

    store
  end

  defp stream_to(store, path) do
    writer = Machine.snapshot_open(store)

    try do
      Storage.write_snapshot_data(path, [], fn -> Machine.snapshot_next(writer) end)
    after
      Machine.snapshot_close(writer)
    end
  end

  # Restores from the file in 1 MiB pieces in a fresh process; returns the
  # store and the peak of :erlang.memory(:binary) above where it started,
  # sampled every millisecond while the restore runs.
  defp restore_measured(path, size) do
    base = :erlang.memory(:binary)
    parent = self()

    sampler =
      spawn_link(fn ->
        sample = fn sample, peak ->
          receive do
            :stop -> send(parent, {:peak, peak})
          after
            1 -> sample.(sample, max(peak, :erlang.memory(:binary) - base))
          end
        end

        sample.(sample, 0)
      end)

    task =
      Task.async(fn ->
        {:ok, f} = :file.open(path, [:raw, :binary, :read])
        restorer = Machine.restore_open(size, nil)
        restorer = feed(f, 0, size, restorer)
        :file.close(f)
        {:memory, heap} = Process.info(self(), :memory)
        {Machine.restore_finish(restorer, nil), heap}
      end)

    {store, heap} = Task.await(task, 120_000)
    send(sampler, :stop)
    assert_receive {:peak, peak}, 5_000
    {store, peak, heap}
  end

  defp feed(_f, at, size, restorer) when at >= size, do: restorer

  defp feed(f, at, size, restorer) do
    {:ok, piece} = :file.pread(f, at, min(1024 * 1024, size - at))
    feed(f, at + byte_size(piece), size, Machine.restore_feed(restorer, piece))
  end

  test "a streamed snapshot has the bytes of a whole one, while the store goes on", %{dir: dir} do
    store = fill(Machine.init([]), 2_000)
    whole = Machine.snapshot(store)
    writer = Machine.snapshot_open(store)
    first = Machine.snapshot_next(writer)
    assert is_binary(first)

    # the store changes under the writer: the snapshot is of the state at open
    for i <- 1..500, do: Machine.apply(@meta, Command.put("key/#{i}", "changed"), store)
    {^store, {:ok, _, _}} = Machine.apply(@meta, Command.delete("key/", prefix: true), store)

    rest = Stream.repeatedly(fn -> Machine.snapshot_next(writer) end)
    rest = Enum.take_while(rest, &(&1 != :eof))
    assert :ok = Machine.snapshot_close(writer)
    assert IO.iodata_to_binary([first | rest]) == whole

    path = Path.join(dir, "snap")
    assert {:ok, size, crc} = stream_to(Machine.restore(whole, nil), path)
    assert size == byte_size(whole) and crc == :erlang.crc32(whole)
  end

  test "a store larger than the bound restores with binary memory well below its size",
       %{dir: dir} do
    store = fill(Machine.init([]), @keys)
    path = Path.join(dir, "snap")
    assert {:ok, size, crc} = stream_to(store, path)
    assert size > @at_least

    {restored, peak, heap} = restore_measured(path, size)

    # pieces of 1 MiB are read, fed and dropped: a few of them at a time
    assert peak < div(size, 4), "binary memory peaked #{peak} bytes over a #{size}-byte restore"
    assert heap < div(size, 4)

    # the restored store snapshots to the same bytes
    assert {:ok, ^size, ^crc} = stream_to(restored, Path.join(dir, "again"))
    assert Machine.info(restored).keys == @keys
  end

  test "a damaged or short snapshot file is refused by the restorer", %{dir: dir} do
    store = fill(Machine.init([]), 3_000)
    path = Path.join(dir, "snap")
    {:ok, size, _crc} = stream_to(store, path)
    bin = File.read!(path)

    # a flipped byte in the middle: refused (by a check or by the checksum)
    at = div(size, 2)
    <<a::binary-size(at), b, c::binary>> = bin
    File.write!(path, [a, Bitwise.bxor(b, 0x10), c])

    assert_raise ArgumentError, ~r/refused/, fn ->
      {:ok, f} = :file.open(path, [:raw, :binary, :read])
      Machine.restore_finish(feed(f, 0, size, Machine.restore_open(size, nil)), nil)
    end

    # cut short: the announced size is never reached
    File.write!(path, binary_part(bin, 0, size - 100))

    assert_raise ArgumentError, ~r/refused/, fn ->
      {:ok, f} = :file.open(path, [:raw, :binary, :read])
      Machine.restore_finish(feed(f, 0, size - 100, Machine.restore_open(size, nil)), nil)
    end
  end
end
