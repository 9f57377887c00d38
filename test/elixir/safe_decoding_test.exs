defmodule Synod.SafeDecodingTest do
  # Terms read from disk or from other nodes never create atoms: a record
  # naming an atom that does not exist is refused, and the atom still does
  # not exist afterwards.
  use ExUnit.Case, async: false

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

    # refused with a named error (issue 12: nothing read from the store crashes the reader)
    assert {:error, {:undecodable_task, "t1"}} = Synod.Tasks.task(store, "t1")
    refute atom_exists?(name)
    :ok = Synod.Store.stop_member(store)
  end
end
