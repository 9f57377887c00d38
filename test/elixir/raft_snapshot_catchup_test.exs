defmodule Synod.RaftSnapshotCatchupTest do
  # Snapshots past 32 MiB, in chunks, on real peers and real files: a store
  # of about 70 MiB (large values, so it is quick to build), a follower that
  # lost its data dir catches up through a chunked snapshot and then serves
  # the latest values with consistency: :stale; the same again with the
  # leader killed while the transfer is under way: the new leader completes
  # it. The transfer is watched on disk (recv.snapshot grows chunk by chunk)
  # so the test fails if the leader does not really stream.
  use ExUnit.Case, async: false

  alias Synod.Test.{Cluster, Wait}

  @moduletag timeout: 180_000

  @value_bytes 512 * 1024
  @keys 140
  @chunk 256 * 1024

  setup do
    root = Path.join(System.tmp_dir!(), "synod-snapcatch-#{System.unique_integer([:positive])}")

    c =
      Cluster.start(3,
        data_root: root,
        prefix: "snapc",
        store: :"snapc#{System.unique_integer([:positive])}",
        store_opts: [snapshot_every: 60, snapshot_chunk: @chunk]
      )

    on_exit(fn ->
      Cluster.stop(c)
      File.rm_rf(root)
    end)

    fill(c)
    {:ok, c: c}
  end

  test "a wiped follower catches up by chunks; then again with the leader killed mid-transfer",
       %{c: c} do
    leader = Cluster.wait_leader(c, c.nodes)
    [victim, other] = c.nodes -- [leader]
    assert snapshot_bytes(c, leader, 64 * 1024 * 1024) > 64 * 1024 * 1024

    # 1. The follower loses everything and comes back empty.
    c = wipe_and_restart(c, victim)
    sizes = watch_receive(c, victim, fn -> caught_up?(c, victim, leader) end)
    assert_streamed(sizes)
    assert_same_state(c, victim, leader)
    put_and_read_stale(c, victim, "after/1")

    # 2. Again, and this time the leader dies while the chunks flow.
    c = wipe_and_restart(c, victim)

    Wait.until(fn -> recv_size(c, victim) > 8 * 1024 * 1024 end, 30_000)
    Cluster.kill(c, leader)
    new_leader = Cluster.wait_leader(c, [victim, other])
    assert new_leader == other

    Wait.until(fn -> caught_up?(c, victim, new_leader) end, 60_000)
    assert_same_state(c, victim, new_leader)
    put_and_read_stale(c, victim, "after/2")
  end

  # -- helpers -------------------------------------------------------------

  defp fill(c) do
    leader = Cluster.wait_leader(c, c.nodes)
    filler = :binary.copy(:rand.bytes(1024), div(@value_bytes, 1024))

    1..@keys
    |> Task.async_stream(
      fn i ->
        value = <<i::32, filler::binary>>

        {:ok, _, _} =
          :erpc.call(leader, Synod.Store, :put, [c.store, key(i), value, [timeout: 30_000]])
      end,
      max_concurrency: 4,
      timeout: 60_000
    )
    |> Stream.run()
  end

  defp key(i), do: "k/" <> String.pad_leading(Integer.to_string(i), 4, "0")

  # The size of the node's newest complete snapshot once it is past `min`
  # bytes: snapshots are written in the background (`snapshot.N.tmp`, then
  # renamed), so right after the fill the file on disk may still be the one
  # taken part way through it.
  defp snapshot_bytes(c, node, min) do
    dir = Cluster.data_dir(c, node)

    Wait.until(
      fn ->
        size =
          Path.join(dir, "snapshot.*")
          |> Path.wildcard()
          |> Enum.reject(&String.ends_with?(&1, ".tmp"))
          |> Enum.map(fn path ->
            case File.stat(path) do
              {:ok, %{size: size}} -> size
              {:error, _} -> 0
            end
          end)
          |> Enum.max(fn -> 0 end)

        size > min and size
      end,
      30_000
    )
  end

  defp wipe_and_restart(c, node) do
    Cluster.kill(c, node)
    File.rm_rf!(Cluster.data_dir(c, node))
    Cluster.restart(c, node)
  end

  defp recv_size(c, node) do
    case File.stat(Path.join(Cluster.data_dir(c, node), "recv.snapshot")) do
      {:ok, %{size: size}} -> size
      _ -> 0
    end
  end

  # Samples the receive file until `done?`; returns the sizes seen.
  defp watch_receive(c, node, done?, acc \\ [], deadline \\ nil) do
    deadline = deadline || System.monotonic_time(:millisecond) + 60_000

    cond do
      done?.() ->
        Enum.reverse(acc)

      System.monotonic_time(:millisecond) > deadline ->
        flunk("#{node} did not catch up; receive file sizes seen: #{inspect(Enum.uniq(acc))}")

      true ->
        Process.sleep(5)
        watch_receive(c, node, done?, [recv_size(c, node) | acc], deadline)
    end
  end

  # The file grew in steps between empty and full: chunks, not one message.
  defp assert_streamed(sizes) do
    partial = sizes |> Enum.filter(&(&1 > 0)) |> Enum.uniq()
    assert length(partial) >= 3, "receive file sizes seen: #{inspect(partial)}"
  end

  defp status(node, store), do: :erpc.call(node, Synod.Raft, :status, [store])

  defp caught_up?(c, node, leader) do
    s = status(node, c.store)
    l = status(leader, c.store)
    s.applied >= l.commit and s.first_index > 1
  catch
    _, _ -> false
  end

  defp stale_range(node, store) do
    {:ok, kvs, count, false} =
      :erpc.call(node, Synod.Store, :range, [store, "k/", [prefix: true, consistency: :stale]])

    {count, Enum.map(kvs, &{&1.key, &1.mod_revision, :erlang.md5(&1.value)})}
  end

  defp assert_same_state(c, node, leader) do
    {count, kvs} = stale_range(node, c.store)
    assert count == @keys
    assert {^count, ^kvs} = stale_range(leader, c.store)
    assert Enum.map(kvs, &elem(&1, 0)) == Enum.map(1..@keys, &key/1)
  end

  defp put_and_read_stale(c, node, key) do
    {:ok, rev, _} = :erpc.call(node, Synod.Store, :put, [c.store, key, "v", [timeout: 10_000]])

    Wait.until(
      fn ->
        case :erpc.call(node, Synod.Store, :get, [c.store, key, [consistency: :stale]]) do
          {:ok, %{value: "v", mod_revision: ^rev}} -> true
          _ -> nil
        end
      end,
      10_000
    )
  end
end
