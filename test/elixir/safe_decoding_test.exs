defmodule Synod.SafeDecodingTest do
  # Terms read from disk or from other nodes never create atoms: a record
  # naming an atom that does not exist is refused, and the atom still does
  # not exist afterwards.
  use ExUnit.Case, async: false

  alias Synod.Raft
  alias Synod.Raft.Storage

  setup_all do
    Synod.LocalCluster.ensure_distributed()
    :ok
  end

  setup do
    dir = Path.join(System.tmp_dir!(), "synod-safe-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf(dir) end)
    # the name is made here and never becomes an atom (unless decoding makes it)
    name = "synod_no_such_atom_#{System.unique_integer([:positive])}"
    {:ok, dir: dir, name: name}
  end

  # term_to_binary of {:put, <atom named name>, 1}, built by hand
  defp etf_naming(name),
    do: <<131, 104, 3, 119, 3, "put", 119, byte_size(name), name::binary, 97, 1>>

  defp atom_exists?(name) do
    _ = String.to_existing_atom(name)
    true
  rescue
    ArgumentError -> false
  end

  test "a task record naming an unknown atom is refused without creating it", %{
    dir: dir,
    name: name
  } do
    store = :"safe_tasks_#{System.unique_integer([:positive])}"
    :ok = Synod.Store.start(store, [node()], dir)
    Synod.Test.Wait.until(fn -> Synod.leader?(store) end)
    {:ok, [task]} = Synod.Tasks.create_tasks(store, [[id: "t1", topic: "safe", data: 1]])
    refute atom_exists?(name)

    # the record as another node could have written it
    record = <<131, 116, 0, 0, 0, 1, 119, byte_size(name), name::binary, 97, 1>>
    {:ok, _, nil} = Synod.Store.put(store, "synod/t/r/" <> task.id, record)

    assert_raise ArgumentError, fn -> Synod.Tasks.task(store, "t1") end
    refute atom_exists?(name)
    :ok = Synod.Store.stop_member(store)
  end

  @tag :needs_safe_member
  test "a Raft log record naming an unknown atom is refused without creating it",
       %{dir: dir, name: name} do
    group = :"safe_log_#{System.unique_integer([:positive])}"
    opts = [name: group, voters: [node()], data_dir: dir, machine: Synod.Raft.KV]
    {:ok, _} = Raft.start_member(opts)
    Synod.Test.Wait.until(fn -> Synod.leader?(group) end)
    {:ok, nil} = Raft.command(group, {:put, :a, 1})
    :ok = Raft.stop_member(group)

    # one more entry on disk, in the member's own term, as a leader could
    # have sent it
    {:ok, storage, recovered} = Storage.open(dir)
    last = List.last(recovered.entries)
    entry = %{index: last.index + 1, term: last.term, type: 0, data: etf_naming(name)}
    {:ok, storage} = storage |> Storage.write([entry]) |> Storage.sync()
    :ok = Storage.close(storage)

    refute atom_exists?(name)
    Raft.start_member(opts)
    # it is committed and applied (or refused) once the member leads again
    Process.sleep(500)
    refute atom_exists?(name)
    Raft.stop_member(group)
  end
end
