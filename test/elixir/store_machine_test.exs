defmodule Synod.Store.MachineTest do
  use ExUnit.Case, async: true

  alias Synod.Store.{Command, Machine}

  @meta %{index: 1, term: 1}

  defp run(store, command) do
    {^store, result} = Machine.apply(@meta, command, store)
    result
  end

  defp get(store, key) do
    case Machine.range(store, Command.range(key)) do
      {[kv], 1, false} -> kv
      {[], 0, false} -> nil
    end
  end

  test "puts, deletes and ranges keep etcd's revisions" do
    s = Machine.init([])
    assert {:ok, 1, {:put, nil}} = run(s, Command.put("a", "1"))
    assert {:ok, 2, {:put, nil}} = run(s, Command.put("b/1", "x"))
    assert {:ok, 3, {:put, prev}} = run(s, Command.put("a", "2", prev_kv: true))

    assert prev == %{
             key: "a",
             value: "1",
             create_revision: 1,
             mod_revision: 1,
             version: 1,
             lease: 0
           }

    assert %{value: "2", create_revision: 1, mod_revision: 3, version: 2} = get(s, "a")

    assert {:ok, 4, _} = run(s, Command.put("b/2", "y"))

    assert {:ok, 4, {:range, [%{key: "b/1"}], 2, true}} =
             run(s, Command.range("b/", prefix: true, limit: 1))

    assert {[%{key: "b/1", value: ""}, %{key: "b/2"}], 2, false} =
             Machine.range(s, Command.range("b/", prefix: true, keys_only: true))

    assert {:ok, 5, {:delete, 2, [%{key: "b/1"}, %{key: "b/2"}]}} =
             run(s, Command.delete("b/", prefix: true, prev_kv: true))

    # deleting nothing is no change
    assert {:ok, 5, {:delete, 0, []}} = run(s, Command.delete("zz"))
    assert get(s, "b/1") == nil
    assert %{revision: 5, keys: 1} = Machine.info(s)
  end

  test "a txn compares, then runs one branch as one revision" do
    s = Machine.init([])
    {:ok, 1, _} = run(s, Command.put("lock", "owner-1"))

    cas = fn expected_mod, value ->
      Command.txn(
        [{:mod_revision, "lock", :==, expected_mod}],
        [{:put, "lock", value}, {:put, "fence", value}],
        [
          {:range, "lock"}
        ]
      )
    end

    assert {:ok, 2, {:txn, true, [{:put, nil}, {:put, nil}]}} = run(s, cas.(1, "owner-2"))
    assert %{mod_revision: 2, version: 2} = get(s, "lock")
    assert %{mod_revision: 2, create_revision: 2} = get(s, "fence")

    # a stale compare-and-swap loses and reads the current value instead
    assert {:ok, 2, {:txn, false, [{:range, [%{value: "owner-2"}], 1, false}]}} =
             run(s, cas.(1, "owner-3"))

    assert {:ok, 2, {:txn, true, []}} =
             run(s, Command.txn([{:absent, "nope"}, {:value, "lock", :>, "owner-1"}], []))

    assert {:ok, 2, {:txn, false, []}} = run(s, Command.txn([{:value, "nope", :!=, "x"}], []))

    assert {:error, :duplicate_key} =
             run(s, Command.txn([], [{:put, "a", "1"}, {:put, "a", "2"}]))

    assert {:error, :lease_not_found} =
             run(s, Command.txn([], [{:put, "a", "1"}, {:put, "b", "1", lease: 9}]))

    assert get(s, "a") == nil
  end

  test "a txn takes the first key of a range, if a count compare holds" do
    s = Machine.init([])
    {:ok, 1, _} = run(s, Command.put("q/2", "b"))
    {:ok, 2, _} = run(s, Command.put("q/1", "a"))

    take =
      Command.txn(
        [{:count, "c/", [prefix: true], :==, 0}],
        [{:delete, "q/", prefix: true, first: true, prev_kv: true}],
        [{:range, "c/", prefix: true}]
      )

    assert {:ok, 3, {:txn, true, [{:delete, 1, [%{key: "q/1", value: "a"}]}]}} = run(s, take)
    assert {:ok, 4, {:txn, true, [{:delete, 1, [%{key: "q/2", value: "b"}]}]}} = run(s, take)
    # empty: nothing deleted, no new revision
    assert {:ok, 4, {:txn, true, [{:delete, 0, []}]}} = run(s, take)

    {:ok, 5, _} = run(s, Command.put("q/3", "c"))
    {:ok, 6, _} = run(s, Command.put("c/3", ""))
    assert {:ok, 6, {:txn, false, [{:range, [%{key: "c/3"}], 1, false}]}} = run(s, take)
    assert %{value: "c"} = get(s, "q/3")

    # counts compare against the number, whatever the range holds beyond it
    for {op, n, holds} <- [{:==, 2, true}, {:>, 1, true}, {:<, 2, false}, {:!=, 0, true}] do
      assert {:ok, 6, {:txn, ^holds, []}} =
               run(s, Command.txn([{:count, "c/3", [range_end: :end], op, n}], []))
    end
  end

  test "revoking a lease deletes its keys in one revision, visible to watches" do
    s = Machine.init([])
    assert {:ok, 0, {:lease_granted, 1, 3000}} = run(s, Command.lease_grant(0, 3000))
    assert {:ok, 0, {:lease_granted, 77, 10}} = run(s, Command.lease_grant(77, 10))
    assert {:error, :lease_exists} = run(s, Command.lease_grant(77, 10))
    {:ok, 1, _} = run(s, Command.put("svc/b", "1", lease: 1))
    {:ok, 2, _} = run(s, Command.put("svc/a", "1", lease: 1))
    {:ok, 3, _} = run(s, Command.put("other", "1", lease: 77))

    assert Machine.leases(s) == [{1, 3000, ["svc/a", "svc/b"]}, {77, 10, ["other"]}]
    assert Machine.lease(s, 1) == {:ok, 3000, 2}
    assert {:ok, 4, {:lease_revoked, 1, 2}} = run(s, Command.lease_revoke(1))
    assert Machine.lease(s, 1) == {:error, :lease_not_found}
    assert {:error, :lease_not_found} = run(s, Command.lease_revoke(1))

    assert {:ok,
            [
              {:delete, 4, %{key: "svc/a", mod_revision: 4}, %{value: "1", version: 1}},
              {:delete, 4, %{key: "svc/b"}, _}
            ], 5} = Machine.events_since(s, 4, 0)
  end

  test "watches resume from a revision until compaction; then a clear error" do
    s = Machine.init(history_max_events: 4)
    for i <- 1..3, do: {:ok, ^i, _} = run(s, Command.put("k", "v#{i}"))

    assert {:ok, [{:put, 1, %{value: "v1"}, nil}, {:put, 2, %{value: "v2"}, %{value: "v1"}}], 3} =
             Machine.events_since(s, 1, 2)

    assert {:ok, [{:put, 3, %{value: "v3"}, _}], 4} = Machine.events_since(s, 3, 10)
    for i <- 4..6, do: {:ok, ^i, _} = run(s, Command.put("k", "v#{i}"))
    assert {:error, {:compacted, 2}} = Machine.events_since(s, 2, 0)
    assert {:ok, events, 7} = Machine.events_since(s, 3, 0)
    assert Enum.map(events, &elem(&1, 1)) == [3, 4, 5, 6]

    assert {:error, :future_revision} = run(s, Command.compact(7))
    assert {:ok, 6, {:compacted, 5}} = run(s, Command.compact(5))
    assert {:error, {:compacted, 5}} = run(s, Command.compact(4))
    assert {:error, {:compacted, 5}} = Machine.events_since(s, 5, 0)
  end

  test "snapshot and restore give the same state and the same bytes" do
    s = Machine.init(history_max_events: 50)
    {:ok, 0, _} = run(s, Command.lease_grant(0, 900))

    for i <- 1..40,
        do: {:ok, _, _} = run(s, Command.put("key/#{rem(i, 13)}", "v#{i}", lease: rem(i, 2)))

    {:ok, _, _} = run(s, Command.delete("key/1", range_end: "key/3"))

    snap = Machine.snapshot(s)
    t = Machine.restore(snap, nil)
    assert Machine.snapshot(t) == snap
    assert Machine.info(t) == Machine.info(s)
    all = Command.range(<<0>>, range_end: :end)
    assert Machine.range(t, all) == Machine.range(s, all)
    assert Machine.events_since(t, 1, 0) == Machine.events_since(s, 1, 0)
    assert Machine.leases(t) == Machine.leases(s)

    # both go on identically
    for store <- [s, t],
        do: {:ok, _, {:lease_revoked, 1, _}} = run(store, Command.lease_revoke(1))

    assert Machine.snapshot(t) == Machine.snapshot(s)

    # a corrupt snapshot is refused, never half-restored
    <<head::binary-size(20), byte, rest::binary>> = snap

    assert {:error, :corrupt} =
             :synod_nif.store_restore(<<head::binary, Bitwise.bxor(byte, 1), rest::binary>>)

    assert {:error, :corrupt} =
             :synod_nif.store_restore(binary_part(snap, 0, byte_size(snap) - 1))

    assert_raise ArgumentError, ~r/store snapshot refused: :corrupt/, fn ->
      Machine.restore("nonsense", nil)
    end
  end

  test "a big range and a big revoke run (on a dirty scheduler) and stay consistent" do
    s = Machine.init(history_max_events: 100)
    {:ok, 0, _} = run(s, Command.lease_grant(5, 1000))
    for i <- 1..3000, do: {:ok, ^i, _} = run(s, Command.put("n/#{i}", "v", lease: 5))
    assert {kvs, 3000, false} = Machine.range(s, Command.range("n/", prefix: true))
    assert length(kvs) == 3000
    assert kvs == Enum.sort_by(kvs, & &1.key)
    assert {:ok, 3001, {:lease_revoked, 5, 3000}} = run(s, Command.lease_revoke(5))
    # one revision of 3000 events does not fit a 100-event history: it is
    # compacted whole, never cut (a watcher gets {:compacted, 3001} and re-reads)
    assert %{keys: 0, events: 0, compact_revision: 3001} = Machine.info(s)
  end

  test "bad input: commands are answered with errors, arguments raise" do
    s = Machine.init([])
    assert {:error, :truncated} = run(s, <<1, 1>>)
    assert {:error, :version} = run(s, <<9, 1, 0>>)
    assert {:error, :trailing} = run(s, Command.put("a", "1") <> <<0>>)
    assert {:error, :invalid} = run(s, {:not, :a, :binary})
    assert %{revision: 0} = Machine.info(s)

    assert_raise ArgumentError, "a range request must be an encoded range command", fn ->
      Machine.range(s, Command.put("a", "1"))
    end

    assert_raise ArgumentError, ~r/a revision must be/, fn -> Machine.events_since(s, 0, 0) end
    assert_raise ArgumentError, ~r/limit must be/, fn -> Machine.events_since(s, 1, -1) end
    assert_raise ArgumentError, ~r/a lease id must be/, fn -> Machine.lease(s, 0) end
    assert_raise ArgumentError, "not a store", fn -> Machine.info(make_ref()) end
    assert_raise ArgumentError, ~r/unknown store option :size/, fn -> Machine.init(size: 1) end

    assert_raise ArgumentError, ~r/history_max_events must be/, fn ->
      Machine.init(history_max_events: -1)
    end

    assert_raise ArgumentError, ~r/history_prev_kv must be a boolean/, fn ->
      Machine.init(%{history_prev_kv: 1})
    end

    assert_raise ArgumentError, ~r/a store command must be a binary/, fn ->
      :synod_nif.store_apply(s, 42)
    end

    assert_raise ArgumentError, ~r/a store snapshot must be a binary/, fn ->
      :synod_nif.store_restore(:nope)
    end
  end
end
