defmodule Synod.HubCoreTest do
  # The hub's pure modules added by issue 17, driven directly, without a
  # coordinator or peers: the protocol check, the registry row's slot, the
  # event queue, the event options, and the stray-input helpers.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  alias Synod.Hub.{EventQueue, Options, Placement, Protocol, Registry, Stray}

  @spec_ok {Synod.Test.HubWorker, :start_link, ["x"]}

  describe "Protocol" do
    test "every message of docs/protocol.md, well formed, is accepted" do
      ref = make_ref()
      me = self()
      here = node()

      for message <- [
            {:synod_start, ref, [me], [{"x", @spec_ok, nil, :active}], []},
            {:synod_start, ref, [me],
             [{"x", %{start: @spec_ok, restart: :temporary}, {7, %{tag: 1}}, :passive}],
             [migration: true]},
            {:synod_stop, ref, [me], ["x", {:any, :term}], [relay: :n@h]},
            {:synod_registered, :n@h, [{"x", @spec_ok, 5, me}],
             [{ref, [me], [{"x", {:ok, me}}]}]},
            {:synod_unregistered, :n@h, [{"x", me}], :migrating, []},
            {:synod_stopped, :n@h, 12, ["x", {:any, :term}], [{ref, [me], [{"x", {:ok, me}}]}]},
            {:synod_stopped, :n@h, 12, [], []},
            {:synod_stopped, :n@h, 12, ["x"], [{ref, [me], {:stopped, [me]}}]},
            {:synod_registered, :n@h, [{"x", @spec_ok, 5, me}], [{ref, [me], {:started, [me]}}]},
            {:synod_orphans, :n@h, [{"x", @spec_ok, nil}]},
            {:synod_sync, :n@h, [{"x", @spec_ok, nil, me}], [{"y", @spec_ok, 3}], [{"z", 9}]},
            {:synod_tombstones, :n@h, [{"z", 9}]},
            {:synod_hello, here, me, {1, :active_active, 128, "s", :divergence}},
            {:synod_welcome, here, me, :anything},
            {:synod_bye, :n@h},
            {:nodeup, :n@h},
            {:nodedown, :n@h},
            {:DOWN, ref, :process, me, :normal},
            {:synod_results, ref, :n@h, [{"x", {:ok, me}}]},
            {:synod_handover_done, ref, :n@h, []},
            {:synod_migration_timeout, ref},
            {:synod_peer_timeout, ref},
            {:synod_sweep, ref},
            {:synod_event, :e, %{any: :data}, true},
            {:synod_child_exit, ref, "x", me, :normal, nil}
          ] do
        assert Protocol.message?(message), inspect(message)
      end
    end

    test "malformed versions are refused, never raise" do
      ref = make_ref()
      me = self()

      for message <- [
            {:synod_start, ref, [me], [{"x", {:m, :f, :not_a_list}, nil, :active}], []},
            {:synod_start, ref, [me], [{"x", %{start: @spec_ok, restart: :often}, nil, :active}],
             []},
            {:synod_start, ref, [me], [{"x", @spec_ok, nil, :sideways}], []},
            {:synod_start, ref, [me], [{"x", @spec_ok, "meta", :active}], []},
            {:synod_start, ref, [:not_a_pid], [], []},
            {:synod_start, ref, [me], [{"x", @spec_ok, nil, :active} | :improper], []},
            {:synod_start, ref, [me], [], [:a | :b]},
            {:synod_stop, ref, [me], :ids, []},
            {:synod_registered, "node", [], []},
            {:synod_registered, :n@h, [{"x", @spec_ok, nil, :pid}], []},
            {:synod_registered, :n@h, [], [{ref, [:nope], []}]},
            {:synod_unregistered, :n@h, [{"x", me}], :gone, []},
            {:synod_unregistered, :n@h, [{"x", me}], {:stopped, :later}, []},
            # the old form of a stop request's change (now synod_stopped)
            {:synod_unregistered, :n@h, [{"x", me}], {:stopped, 12}, []},
            {:synod_unregistered, :n@h, [{"x", me}, {"y", :not_a_pid}], {:stopped, 1}, []},
            {:synod_unregistered, :n@h, [{"x", me}, {"y"}], :stopped, []},
            {:synod_unregistered, :n@h, [{"x", me} | :improper], :stopped, []},
            {:synod_unregistered, :n@h, :stopped, :stopped, []},
            {:synod_stopped, "node", 12, ["x"], []},
            {:synod_stopped, :n@h, :later, ["x"], []},
            {:synod_stopped, :n@h, 12, ["x" | :improper], []},
            {:synod_stopped, :n@h, 12, :ids, []},
            {:synod_stopped, :n@h, 12, ["x"], [{ref, [:nope], []}]},
            {:synod_stopped, :n@h, 12, ["x"]},
            {:synod_stopped, :n@h, 12, ["x"], [{ref, [me], {:stopped, [:not_a_pid]}}]},
            {:synod_stopped, :n@h, 12, ["x"], [{ref, [me], {:stopped, :pids}}]},
            {:synod_registered, :n@h, [], [{ref, [me], {:started, [:not_a_pid]}}]},
            {:synod_registered, :n@h, [], [{ref, [me], {:started, :pids}}]},
            {:synod_orphans, :n@h, [{"x", @spec_ok}]},
            {:synod_sync, :n@h, [], [], [{"z", :t}]},
            {:synod_hello, :other@host, me, :config},
            {:synod_event, "e", 1, false},
            {:synod_event, :e, 1, :maybe},
            {:synod_child_exit, :token, "x", me, :normal, nil},
            {:synod_child_exit, ref, "x", me, :normal, :not_a_pid},
            {:synod_start, ref, [me], [{"x", @spec_ok, nil, :active}]},
            {:EXIT, me, :kill},
            :anything,
            {}
          ] do
        refute Protocol.message?(message), inspect(message)
      end
    end

    test "calls: known shapes only" do
      assert Protocol.call?(:members)
      assert Protocol.call?({:whereis, {:any, "id"}})
      assert Protocol.call?({:synod_locate, ["a", "b"]})
      assert Protocol.call?({:synod_subscribe, self(), [:a, :b]})
      assert Protocol.call?({:start_children, [{"x", @spec_ok, nil, :active}]})
      refute Protocol.call?({:synod_locate, [:a | :b]})
      refute Protocol.call?({:synod_subscribe, :me, :all})
      refute Protocol.call?({:synod_subscribe, self(), [:a, "b"]})
      refute Protocol.call?({:start_children, [{"x", :spec, nil, :active}]})
      refute Protocol.call?({:synod_dispatch_event, :e, 1, :no})
      refute Protocol.call?({:stop_children, :all})
      refute Protocol.call?(:attach)
    end
  end

  describe "Registry slot" do
    test "metadata and incarnation round-trip in one term; 0 means none" do
      for meta <- [nil, %{tag: :t}], inc <- [0, 1, 1_796_000_000_000_000] do
        slot = Registry.slot(meta, inc)
        assert Registry.meta(slot) == meta
        assert Registry.inc(slot) == inc
        assert Registry.slot?(slot)
        assert Registry.with_inc(slot, 42) |> Registry.inc() == 42
        assert Registry.with_inc(slot, 42) |> Registry.meta() == meta
      end

      # the wire forms of an old member or a client stay what they were
      assert Registry.slot(nil, 0) == nil
      assert Registry.slot(%{a: 1}, 0) == %{a: 1}
      refute Registry.slot?(-1)
      refute Registry.slot?({1, :not_a_map})
      refute Registry.slot?("meta")
    end

    test "a restarted coordinator's rows follow the children that run" do
      me = node()
      [p1, p2, p3, far] = for _ <- 1..4, do: spawn(fn -> :ok end)

      rows = [
        {"same", @spec_ok, 1, [p1]},
        {"restarted", @spec_ok, 2, [p2]},
        {"gone", @spec_ok, 3, [p3]},
        {"remote", @spec_ok, 4, []}
      ]

      running = [{"same", p1, @spec_ok}, {"restarted", far, @spec_ok}, {"new", p3, @spec_ok}]
      adopted = Registry.adopt(rows, me, running)

      assert {"restarted", @spec_ok, 2, [far]} in adopted
      assert {"gone", @spec_ok, 3, []} in adopted
      assert {"new", @spec_ok, nil, [p3]} in adopted
      refute Enum.any?(adopted, &(elem(&1, 0) in ["same", "remote"]))
      assert Registry.local_pid([p1], me) == p1
      assert Registry.local_pid([], me) == nil
    end

    test "the tagged match specs find tagged rows with or without an incarnation" do
      table = :ets.new(:rows, [:set])
      pid = self()

      :ets.insert(table, [
        {"a", @spec_ok, Registry.slot(%{tag: :blue}, 0), [pid]},
        {"b", @spec_ok, Registry.slot(%{tag: :blue}, 99), [pid]},
        {"c", @spec_ok, Registry.slot(%{tag: :red}, 99), [pid]},
        {"d", @spec_ok, Registry.slot(nil, 99), [pid]}
      ])

      assert Enum.sort(:ets.select(table, Registry.tagged(:blue))) == [{"a", [pid]}, {"b", [pid]}]
    end
  end

  describe "EventQueue" do
    test "delivers while running; queues or discards while paused; resumes in order" do
      q = EventQueue.new()

      assert {q, :event_dispatched, [{:deliver, :a, 1}]} =
               EventQueue.dispatch(q, false, :a, 1, false)

      assert {q, :event_queued, []} = EventQueue.dispatch(q, true, :b, 2, false)
      assert {q, :event_discarded, []} = EventQueue.dispatch(q, true, :c, 3, true)
      assert {q, :event_queued, []} = EventQueue.dispatch(q, true, :d, 4, false)
      assert {q, [{:deliver, :b, 2}, {:deliver, :d, 4}]} = EventQueue.resume(q)
      assert {_, []} = EventQueue.resume(q)
    end
  end

  describe "event options" do
    test "the seed's option map and keywords mean the same" do
      assert Options.event!(%{discard_event: true, members: :global}) ==
               %{discard: true, members: :global, timeout: 5_000}

      assert Options.event!(discard: true, members: [:a@b], timeout: 10) ==
               %{discard: true, members: [:a@b], timeout: 10}

      assert Options.event!([]) == %{discard: false, members: :local, timeout: 5_000}

      assert_raise ArgumentError, ~r/invalid option discard_event: expected a boolean/, fn ->
        Options.event!(%{discard_event: :yes})
      end

      assert_raise ArgumentError, ~r/^unknown option :drop/, fn ->
        Options.event!(%{drop: true})
      end

      assert_raise ArgumentError, ~r/invalid option members: expected :global, :local/, fn ->
        Options.event!(members: :some)
      end
    end
  end

  describe "Tombstones" do
    alias Synod.Hub.Tombstones

    test "the clock never goes back and passes every stamp it saw" do
      assert Tombstones.tick(0, 1_000) == {1_000, 1_000}
      assert Tombstones.tick(1_000, 1_000) == {1_001, 1_001}
      assert Tombstones.tick(5_000, 1_000) == {5_001, 5_001}
      assert Tombstones.observe(5_000, 9_000) == 9_000
      assert Tombstones.observe(9_000, 5_000) == 9_000
    end

    test "a stop covers the incarnations up to its stamp, and only those" do
      refute Tombstones.covers?(nil, 0)
      assert Tombstones.covers?(10, 0)
      assert Tombstones.covers?(10, 10)
      refute Tombstones.covers?(10, 11)
    end

    test "the table keeps the later stamp and the copy a tombstone stopped" do
      meta = :ets.new(:meta, [:set])
      pid = self()
      assert :ok = Tombstones.record(meta, [{"a", 10}, {"b", 20}], %{"a" => pid}, 1)
      assert Tombstones.lookup(meta, "a") == {10, 1, {pid, 1}}
      assert Tombstones.lookup(meta, "b") == {20, 1, nil}
      # an older stamp changes nothing; a newer one keeps the recorded copy,
      # with the time it was stopped
      :ok = Tombstones.record(meta, [{"a", 5}], %{}, 2)
      assert Tombstones.lookup(meta, "a") == {10, 1, {pid, 1}}
      :ok = Tombstones.record(meta, [{"a", 30}], %{}, 3)
      assert Tombstones.lookup(meta, "a") == {30, 3, {pid, 1}}
      # a stop request here clears it
      :ok = Tombstones.record(meta, [{"a", 40}], %{"a" => nil}, 4)
      assert Tombstones.lookup(meta, "a") == {40, 4, nil}
      assert Enum.sort(Tombstones.all(meta)) == [{"a", 40}, {"b", 20}]
      assert Tombstones.any?(meta)
      assert Tombstones.sweep(meta, 2) == 1
      assert Tombstones.all(meta) == [{"a", 40}]
      assert Tombstones.sweep(meta, 5) == 1
      refute Tombstones.any?(meta)
      assert Tombstones.lookup(meta, "a") == nil
    end

    test "record/4 and record/5 (given the bound the shell keeps) keep the later stamp" do
      :rand.seed(:exsss, {3, 12, 2026})
      slow = :ets.new(:slow, [:set])
      fast = :ets.new(:fast, [:set])
      pids = [nil, self(), spawn(fn -> :ok end)]

      # the rule, on a map: the later stamp wins; the time and the copy
      # change when the stamp is the later one or the id is stopped here
      # (a copy is kept with the time it was stopped)
      copy = fn
        nil, _now -> nil
        pid, now -> {pid, now}
      end

      model = fn model, tombstones, stopped, now ->
        Enum.reduce(tombstones, model, fn {id, t}, model ->
          case model do
            %{^id => {old_t, _, old_copy}} when old_t < t or is_map_key(stopped, id) ->
              copy = if is_map_key(stopped, id), do: copy.(stopped[id], now), else: old_copy
              Map.put(model, id, {max(t, old_t), now, copy})

            %{^id => _} ->
              model

            _ ->
              Map.put(model, id, {t, now, copy.(Map.get(stopped, id), now)})
          end
        end)
      end

      # batches of stamps, mostly above everything recorded (a stop here or
      # a peer's), sometimes older ones (a late sync), some ids stopped
      Enum.reduce(1..300, {false, 0, %{}}, fn now, {bound, clock, expected} ->
        t = if :rand.uniform(4) == 1, do: :rand.uniform(clock + 1), else: clock + :rand.uniform(5)
        ids = Enum.take_random(Enum.map(1..12, &"id#{&1}"), :rand.uniform(6))
        tombstones = for id <- ids, do: {id, if(:rand.uniform(3) == 1, do: t + 1, else: t)}
        stopped = Map.new(Enum.take_random(ids, :rand.uniform(3) - 1), &{&1, Enum.random(pids)})
        :ok = Tombstones.record(slow, tombstones, stopped, now)
        :ok = Tombstones.record(fast, tombstones, stopped, now, bound)
        expected = model.(expected, tombstones, stopped, now)
        table = Enum.sort(for {id, {t, at, pid}} <- expected, do: {{:tomb, id}, t, at, pid})
        assert Enum.sort(:ets.tab2list(slow)) == table
        assert Enum.sort(:ets.tab2list(fast)) == table
        newest = Tombstones.newest(tombstones)
        assert newest == tombstones |> Enum.map(&elem(&1, 1)) |> Enum.max()
        {max(bound || 0, newest), max(clock, newest), expected}
      end)

      # with no tombstone at all (bound false) every stamp is put whole
      none = :ets.new(:none, [:set])
      :ok = Tombstones.record(none, [{"a", 3}, {"b", 4}], %{"b" => self()}, 9, false)
      assert Tombstones.lookup(none, "a") == {3, 9, nil}
      assert Tombstones.lookup(none, "b") == {4, 9, {self(), 9}}
      assert Tombstones.newest([]) == 0
    end

    test "record_ids/7 and record_stop/5 (one stamp for a batch) are record/4" do
      :rand.seed(:exsss, {12, 3, 2026})
      slow = :ets.new(:slow, [:set])
      fast = :ets.new(:fast, [:set])
      pids = [self(), spawn(fn -> :ok end)]

      # batches of one stamp each: a stop request here (record_stop/5, its
      # stamp above the bound), a peer's (record_ids/7, mostly above the
      # bound, sometimes not), over ids old and new; `copies` as the shell
      # keeps it (whether any tombstone holds a copy)
      Enum.reduce(1..300, {false, 0}, fn now, {bound, clock} ->
        copies? = Enum.any?(:ets.tab2list(slow), &(elem(&1, 3) != nil))

        ids = Enum.take_random(Enum.map(1..40, &"id#{&1}"), :rand.uniform(8))

        {t, stopped} =
          case :rand.uniform(3) do
            1 ->
              t = clock + :rand.uniform(5)
              :ok = Tombstones.record_stop(fast, ids, t, now, bound)
              {t, Map.new(ids, &{&1, nil})}

            _ ->
              t = if :rand.uniform(4) == 1, do: :rand.uniform(clock + 1), else: clock + 1

              stopped =
                Map.new(Enum.take_random(ids, :rand.uniform(3) - 1), &{&1, Enum.random(pids)})

              :ok = Tombstones.record_ids(fast, ids, t, stopped, now, bound, copies?)
              {t, stopped}
          end

        :ok = Tombstones.record(slow, for(id <- ids, do: {id, t}), stopped, now)
        assert Enum.sort(:ets.tab2list(fast)) == Enum.sort(:ets.tab2list(slow))
        {max(bound || 0, t), max(clock, t)}
      end)
    end

    test "record_ids/7 re-stopping recorded ids writes them in place, as record/4 does" do
      fast = :ets.new(:fast, [:set])
      slow = :ets.new(:slow, [:set])
      pid = self()

      for tab <- [fast, slow] do
        :ok = Tombstones.record(tab, [{"a", 5}, {"b", 5}], %{"a" => pid}, 1)
      end

      # the first id recorded, "c" new, "b"'s copy written, "a" keeps its own
      :ok = Tombstones.record_ids(fast, ["a", "b", "c"], 9, %{"b" => pid}, 2, 5, true)
      :ok = Tombstones.record(slow, [{"a", 9}, {"b", 9}, {"c", 9}], %{"b" => pid}, 2)

      assert Enum.sort(:ets.tab2list(fast)) == Enum.sort(:ets.tab2list(slow))
      assert Tombstones.lookup(fast, "a") == {9, 2, {pid, 1}}
      assert Tombstones.lookup(fast, "b") == {9, 2, {pid, 2}}
      assert Tombstones.lookup(fast, "c") == {9, 2, nil}
    end

    test "record_ids/7 with no copy recorded anywhere puts a re-stop whole, as record/4 has it" do
      fast = :ets.new(:fast, [:set])
      slow = :ets.new(:slow, [:set])
      pid = self()

      for tab <- [fast, slow] do
        :ok = Tombstones.record(tab, [{"a", 5}, {"b", 5}], %{}, 1)
      end

      :ok = Tombstones.record_ids(fast, ["a", "b", "c"], 9, %{"b" => pid}, 2, 5, false)
      :ok = Tombstones.record(slow, [{"a", 9}, {"b", 9}, {"c", 9}], %{"b" => pid}, 2)
      assert Enum.sort(:ets.tab2list(fast)) == Enum.sort(:ets.tab2list(slow))
      assert Tombstones.lookup(fast, "b") == {9, 2, {pid, 2}}

      # an older stamp still goes through the comparison: nothing changes
      :ok = Tombstones.record_ids(fast, ["a", "c"], 7, %{}, 3, 9, false)
      assert Tombstones.lookup(fast, "a") == {9, 2, nil}
      assert Tombstones.lookup(fast, "c") == {9, 2, nil}
    end

    test "the copies' sweep forgets the copies past the window, and only those" do
      meta = :ets.new(:meta, [:set])
      [p, q] = [self(), spawn(fn -> :ok end)]
      :ok = Tombstones.record(meta, [{"a", 1}, {"b", 1}, {"c", 1}], %{"a" => p, "b" => q}, 100)
      :ok = Tombstones.record(meta, [{"b", 2}], %{"b" => q}, 7_000)
      w = Tombstones.copy_window()
      assert w == 5_000

      assert Tombstones.copies_sweep(false, 99_000) == nil
      # the latest copy (7_000) is inside the window at 11_000: kept
      assert Tombstones.copies_sweep(7_000, 11_000) == {6_000, 7_000}
      assert Tombstones.clear_copies(meta, 6_000) == 1
      assert Tombstones.lookup(meta, "a") == {1, 100, nil}
      assert Tombstones.lookup(meta, "b") == {2, 7_000, {q, 7_000}}
      assert Tombstones.lookup(meta, "c") == {1, 100, nil}
      # past it: every copy goes, and none is left to keep
      assert Tombstones.copies_sweep(7_000, 12_001) == {7_001, false}
      assert Tombstones.clear_copies(meta, 7_001) == 1
      assert Tombstones.lookup(meta, "b") == {2, 7_000, nil}
      assert Enum.sort(Tombstones.all(meta)) == [{"a", 1}, {"b", 2}, {"c", 1}]

      assert Tombstones.copies_after(false, %{}, 5) == false
      assert Tombstones.copies_after(false, %{"a" => nil}, 5) == false
      assert Tombstones.copies_after(false, %{"a" => p}, 5) == 5
      assert Tombstones.copies_after(3, %{"a" => nil}, 5) == 3
    end
  end

  describe "Migrations" do
    alias Synod.Hub.Migrations

    # entries as the coordinator builds them: {id, spec, slot, mode on target}
    defp entries(ids), do: for(id <- ids, do: {id, @spec_ok, nil, :active})

    test "cold: stop the old copies, send the start, arm the timer; the answer ends it" do
      ref = make_ref()

      {m, effects} =
        Migrations.begin(Migrations.new(), ref, :stop_then_start, :b, entries([1, 2]), %{})

      assert [
               {:stop_local, [1, 2], :migrating},
               {:send_start, :b, ^ref, [{1, _, _, :active}, {2, _, _, :active}]},
               {:timer, 30_000, {:synod_migration_timeout, ^ref}}
             ] = effects

      assert Migrations.paused?(m)
      # cold children do not run here meanwhile: reconcile may decide them
      assert Migrations.migrating(m) == MapSet.new()

      me = self()
      {m, effects} = Migrations.answered(m, ref, :b, [{1, {:ok, me}}, {2, {:error, :boom}}], :a)

      assert [
               {:log, :warning, text},
               {:broadcast, {:synod_event, :children_migrated, {:a, :b, [{1, ^me}]}, false}},
               {:event, :children_migrated, {:a, :b, [{1, ^me}]}},
               :resume_events
             ] = effects

      assert text =~ "1 children failed to move to b"
      refute Migrations.paused?(m)
      # answered once: a second answer, a forged one, or a late timeout change nothing
      assert {^m, []} = Migrations.answered(m, ref, :b, [], :a)
      assert {^m, []} = Migrations.timed_out(m, ref)
    end

    test "an answer from another node than the target, or to another ref, is ignored" do
      ref = make_ref()
      {m, _} = Migrations.begin(Migrations.new(), ref, :stop_then_start, :b, entries([1]), %{})
      assert {^m, []} = Migrations.answered(m, ref, :c, [{1, {:ok, self()}}], :a)
      assert {^m, []} = Migrations.answered(m, make_ref(), :b, [{1, {:ok, self()}}], :a)
    end

    test "hot: start first, hand over, then stop the old copies; refused children are no failure" do
      ref = make_ref()
      {old, new} = {spawn(fn -> :ok end), self()}
      m0 = Migrations.new()

      {m, effects} =
        Migrations.begin(m0, ref, :start_then_handover, :c, entries([3, 4]), %{3 => old, 4 => old})

      assert [{:send_start, :c, ^ref, _}, {:timer, _, _}] = effects
      assert Migrations.migrating(m) == MapSet.new([3, 4])

      {m, effects} =
        Migrations.answered(m, ref, :c, [{3, {:ok, new}}, {4, {:error, :stopped}}], :a)

      assert [{:handover, ^ref, :c, [{3, ^old, ^new}]}] = effects
      assert Migrations.paused?(m) and MapSet.member?(Migrations.migrating(m), 3)
      # answered once
      assert {^m, []} = Migrations.answered(m, ref, :c, [{3, {:ok, new}}], :a)

      {m, effects} = Migrations.handed_over(m, ref, :c, [{3, old, new}], :a)

      assert [
               {:stop_local, [3], :migrating},
               {:broadcast, {:synod_event, :children_migrated, {:a, :c, [{3, ^new}]}, false}},
               {:event, :children_migrated, _},
               :resume_events
             ] = effects

      assert m == m0
      assert {^m, []} = Migrations.handed_over(m, ref, :c, [{3, old, new}], :a)
    end

    test "start then stop: the old copies stop as soon as the new owner answered" do
      ref = make_ref()
      old = spawn(fn -> :ok end)

      {m, [{:send_start, :c, ^ref, _}, _]} =
        Migrations.begin(Migrations.new(), ref, :start_then_stop, :c, entries([5]), %{5 => old})

      assert Migrations.migrating(m) == MapSet.new([5])
      {m, effects} = Migrations.answered(m, ref, :c, [{5, {:ok, self()}}], :a)

      assert [{:stop_local, [5], :migrating}, {:broadcast, _}, {:event, _, _}, :resume_events] =
               effects

      assert m == Migrations.new()
    end

    test "timeouts and a target that leaves give moves up; the queue resumes after the last" do
      {cold, hot} = {make_ref(), make_ref()}
      {m, _} = Migrations.begin(Migrations.new(), cold, :stop_then_start, :b, entries([1]), %{})
      {m, _} = Migrations.begin(m, hot, :start_then_handover, :c, entries([3]), %{3 => self()})

      assert {m1, [{:log, :warning, text}]} = Migrations.timed_out(m, cold)
      assert text =~ "1 children to b got no answer"
      assert Migrations.paused?(m1)

      # the target of the hot move leaves: given up at once, children decided again
      assert {m2, [:resume_events]} = Migrations.cancel_to(m1, :c)
      assert m2 == Migrations.new()
      # a node with no moves to it changes nothing
      assert {^m, []} = Migrations.cancel_to(m, :zz)
      assert {m3, []} = Migrations.cancel_to(m, :c)
      assert Migrations.migrating(m3) == MapSet.new() and Migrations.paused?(m3)
    end
  end

  describe "MigrationStrategy and ReplicationModel" do
    alias Synod.Hub.{MigrationStrategy, ReplicationModel}

    test "the built-ins are implementations; names and modules are validated" do
      assert MigrationStrategy.plan(:cold, [1], :b) == :stop_then_start
      assert MigrationStrategy.plan(:hot, [1], :b) == :start_then_handover
      assert MigrationStrategy.plan(Synod.Test.HubStartFirst, [1], :b) == :start_then_stop
      assert MigrationStrategy.valid?(Synod.Test.HubStartFirst)
      refute MigrationStrategy.valid?(Enum)
      refute MigrationStrategy.valid?("cold")

      assert ReplicationModel.module(:active_passive).mode([:a, :b], :a) == :active
      assert ReplicationModel.module(:active_passive).mode([:a, :b], :b) == :passive
      assert ReplicationModel.module(:active_active).mode([:a, :b], :b) == :active
      assert Placement.mode(Synod.Test.HubLastActive, [:a, :b], :b) == :active
      assert Placement.mode(Synod.Test.HubLastActive, [:a, :b], :a) == :passive
      refute ReplicationModel.valid?(Enum)

      assert %{migration: Synod.Test.HubStartFirst, replication_model: Synod.Test.HubLastActive} =
               Options.hub!(
                 name: :h,
                 migration: Synod.Test.HubStartFirst,
                 replication_model: Synod.Test.HubLastActive
               )

      assert_raise ArgumentError,
                   ~r/invalid option migration: expected :cold, :hot or a module/,
                   fn ->
                     Options.hub!(name: :h, migration: Enum)
                   end

      assert_raise ArgumentError, ~r/invalid option replication_model: expected/, fn ->
        Options.hub!(name: :h, replication_model: :sideways)
      end
    end

    test "mode changes follow an application's model too" do
      ring1 = Synod.Ring.new([:a, :b, :c], [])
      ring2 = Synod.Ring.new([:a, :b], [])
      ids = for i <- 1..200, do: "m-#{i}"

      changes =
        for id <- ids,
            change = Placement.mode_change(:a, Synod.Test.HubLastActive, 2, ring1, ring2, id),
            do: {id, change}

      for {id, change} <- changes do
        assert change ==
                 Placement.mode(Synod.Test.HubLastActive, Placement.owners(ring2, 2, id), :a)
      end

      assert changes != []
    end
  end

  describe "Membership" do
    alias Synod.Hub.Membership

    test "a peer's coordinator that died: gone with its node, awaited while the node stays" do
      assert Membership.on_down(:noconnection, true) == {:remove, :nodedown}
      assert Membership.on_down(:noconnection, false) == {:remove, :nodedown}
      assert Membership.on_down(:killed, true) == {:await, {:hub_down, :killed}}
      assert Membership.on_down(:noproc, true) == {:await, :nodedown}
      assert Membership.on_down(:killed, false) == {:remove, {:hub_down, :killed}}
    end

    test "after a restart, members still connected are awaited and the others are gone" do
      assert Membership.after_restart([:a, :b, :c], :a, [:c, :x]) == {[:c], [:b]}
      assert Membership.after_restart([:a], :a, [:b]) == {[], []}
    end

    test "renaming, completeness and partition transitions" do
      known = MapSet.new([:nonode@nohost, :b])
      assert Membership.rename(known, :nonode@nohost, :a) == MapSet.new([:a, :b])

      known = MapSet.new([:a, :b, :c])
      assert Membership.complete?(known, %{b: {1, 2}, c: {3, 4}}, %{})
      refute Membership.complete?(known, %{b: {1, 2}}, %{})

      refute Membership.complete?(known, %{b: {1, 2}, c: {nil, nil}}, %{
               c: {make_ref(), :nodedown}
             })

      assert Membership.transition(:majority, [:a], known, false) == :suspend
      assert Membership.transition(:majority, [:a], known, true) == :none
      assert Membership.transition(:majority, [:a, :b], known, true) == :heal
      assert Membership.transition(:divergence, [:a], known, false) == :none
    end
  end

  describe "Membership changes as effects" do
    alias Synod.Hub.Membership

    setup do
      %{known: MapSet.new([:a, :b, :c]), ring: make_ref()}
    end

    test "a side that loses its majority suspends, and does not reconcile", %{
      known: known,
      ring: ring
    } do
      assert {{true, false}, [:suspend_children, {:event, :partitioned, [:a]}]} =
               Membership.on_change(:majority, [:a], known, {false, false}, ring, {:left, :b})

      # still partitioned: nothing
      assert {{true, false}, []} =
               Membership.on_change(:majority, [:a], known, {true, false}, ring, {:left, :c})
    end

    test "a heal waits for the sync before it reconciles", %{known: known, ring: ring} do
      assert {{false, true}, [{:event, :healed, [:a, :b]}]} =
               Membership.on_change(
                 :majority,
                 [:a, :b],
                 known,
                 {true, false},
                 ring,
                 {:joined, :b}
               )

      # another join while healing: still waiting
      assert {{false, true}, []} =
               Membership.on_change(
                 :majority,
                 [:a, :b, :c],
                 known,
                 {false, true},
                 ring,
                 {:joined, :c}
               )

      assert Membership.synced(true) == {false, [{:reconcile, nil, :healed}]}
      assert Membership.synced(false) == {false, []}
    end

    test "otherwise every change reconciles against the old ring, with its reason", %{
      known: known,
      ring: ring
    } do
      assert {{false, false}, [{:reconcile, ^ring, {:joined, :c}}]} =
               Membership.on_change(
                 :majority,
                 [:a, :b, :c],
                 known,
                 {false, false},
                 ring,
                 {:joined, :c}
               )

      assert {{false, false}, [{:reconcile, ^ring, {:left, :b}}]} =
               Membership.on_change(:divergence, [:a], known, {false, false}, ring, {:left, :b})

      # an application's strategy decides
      assert {{true, false}, [:suspend_children | _]} =
               Membership.on_change(
                 Synod.Test.HubNeverAlone,
                 [:a],
                 known,
                 {false, false},
                 ring,
                 :x
               )
    end
  end

  describe "Membership: peers coming and going, as effects" do
    alias Synod.Hub.Membership

    test "a hello: nothing for the same coordinator, a watch and a sync for a successor, a join for a new member" do
      {p1, p2} = {self(), spawn(fn -> :ok end)}
      peers = %{b: {p1, make_ref()}, c: {nil, nil}}
      assert Membership.hello(peers, :b, p1) == []
      assert Membership.hello(peers, :b, p2) == [{:watch_peer, :b, p2}, {:sync, :b}]
      # an awaited coordinator's successor: the ring stays, no join
      assert Membership.hello(peers, :c, p2) == [{:watch_peer, :c, p2}, {:sync, :c}]

      assert Membership.hello(peers, :d, p2) == [
               {:watch_peer, :d, p2},
               {:know, :d},
               {:sync, :d},
               {:event, :member_joined, :d},
               {:membership, {:joined, :d}}
             ]
    end

    test "a leave: the moves to it go, then its copies, then the ring; nothing for a stranger" do
      peers = %{b: {self(), make_ref()}}

      assert Membership.leave(peers, :b, :nodedown) == [
               {:unwatch_peer, :b},
               {:cancel_moves_to, :b},
               {:drop_node, :b},
               {:event, :member_left, {:b, :nodedown}},
               {:membership, {:left, :b}},
               :synced,
               :send_orphans
             ]

      assert Membership.leave(peers, :zz, :nodedown) == []
    end

    test "a peer's coordinator down: awaited while its node stays, else it leaves" do
      peers = %{b: {self(), make_ref()}}

      assert Membership.down(peers, :b, :killed, true) == [
               {:await_peer, :b, {:hub_down, :killed}}
             ]

      assert [{:unwatch_peer, :b} | _] = effects = Membership.down(peers, :b, :noconnection, true)
      assert {:event, :member_left, {:b, :nodedown}} in effects

      assert {:event, :member_left, {:b, {:hub_down, :killed}}} in Membership.down(
               peers,
               :b,
               :killed,
               false
             )
    end
  end

  describe "Registry row transitions" do
    setup do
      here = self()
      # a pid on another node: a peer's copy, as the registry holds it
      there = :erlang.list_to_pid(~c"<0.1.0>") |> then(&:erlang.binary_to_term(fake_remote(&1)))
      %{here: here, there: there}
    end

    # the external form of `pid` with another node name
    defp fake_remote(pid) do
      rest =
        case :erlang.term_to_binary(pid) do
          <<131, 88, 100, n::16, _name::binary-size(n), rest::binary>> -> rest
          <<131, 88, 119, n, _name::binary-size(n), rest::binary>> -> rest
        end

      other = "other@host"
      <<131, 88, 100, byte_size(other)::16, other::binary, rest::binary>>
    end

    test "a copy recorded, replaced on its node, gone, and its node gone", %{
      here: here,
      there: there
    } do
      assert node(there) == :other@host
      assert Registry.put_pid(nil, "x", :spec, 5, here) == {"x", :spec, 5, [here]}
      row = Registry.put_pid({"x", :spec, 5, [here]}, "x", :spec, 5, there)
      assert row == {"x", :spec, 5, [there, here]}
      # a newer copy on the same node replaces the older
      new = spawn(fn -> :ok end)
      assert Registry.put_pid(row, "x", :spec, 5, new) == {"x", :spec, 5, [new, there]}

      assert Registry.remove_pid(row, here, :migrating) == {:put, {"x", :spec, 5, [there]}}
      assert Registry.remove_pid({"x", :spec, 5, [here]}, here, :stopped) == :delete
      assert Registry.remove_pid({"x", :spec, 5, [here]}, here, {:stopped, 9}) == :delete
      # a moved or suspended child keeps its row, with no copy
      assert Registry.remove_pid({"x", :spec, 5, [here]}, here, :suspended) ==
               {:put, {"x", :spec, 5, []}}

      assert Registry.remove_pid(row, new, :stopped) == :unchanged

      assert Registry.drop_node(row, :other@host) == {"x", :spec, 5, [here]}
      assert Registry.drop_node(row, :nobody@host) == nil
      assert Registry.replace_pid(row, here, new) == {"x", :spec, 5, [new, there]}
    end

    test "a peer's sync: the same copy, a stale one, or none there", %{here: here, there: there} do
      row = {"x", :spec, nil, [there, here]}
      assert Registry.against_sync(row, :other@host, %{"x" => there}) == :known
      assert Registry.against_sync(row, :other@host, %{}) == {:stale, {"x", :spec, nil, [here]}}
      other = spawn(fn -> :ok end)
      assert {:stale, _} = Registry.against_sync(row, :other@host, %{"x" => other})
      assert Registry.against_sync({"x", :spec, nil, [here]}, :other@host, %{}) == :none
    end

    test "a start: running, stopped, new incarnation, or as sent", %{here: here, there: there} do
      me = node()
      entry = {"x", :spec, 10, :active}
      # a copy runs here already: its pid is the answer
      assert Registry.start_step(:client, entry, {"x", :spec, 10, [here]}, me, nil, 99) ==
               {:running, "x", here}

      # a move of a stopped incarnation is refused; a later one goes through
      assert Registry.start_step(:member, entry, nil, me, 10, 99) == {:stopped, "x"}

      assert Registry.start_step(:member, entry, {"x", :spec, 10, [there]}, me, 9, 99) ==
               {:start, "x", :spec, 10, :active, [there]}

      # a client's start after a stop, or without an incarnation, is stamped now
      assert Registry.start_step(:client, entry, nil, me, 10, 99) ==
               {:start, "x", :spec, 99, :active, []}

      assert Registry.start_step(:client, {"x", :spec, %{m: 1}, :passive}, nil, me, nil, 99) ==
               {:start, "x", :spec, {99, %{m: 1}}, :passive, []}

      assert Registry.start_step(:client, entry, nil, me, nil, 99) ==
               {:start, "x", :spec, 10, :active, []}
    end

    test "a stop: what runs here, and what becomes of the row", %{here: here, there: there} do
      me = node()
      assert Registry.stop_step("x", nil, me) == {:absent, "x"}
      assert Registry.stop_step("x", {"x", :spec, 1, [there]}, me) == {:absent, "x"}

      assert Registry.stop_step("x", {"x", :spec, 1, [there, here]}, me) ==
               {:stop, "x", :spec, 1, here, [there]}

      refute Registry.keep_row?({:stopped, 5}, [there])
      assert Registry.keep_row?(:stopped, [there])
      refute Registry.keep_row?(:stopped, [])
      assert Registry.keep_row?(:migrating, [])
      assert Registry.keep_row?(:suspended, [])
    end
  end

  describe "Replies and orphans" do
    test "answers go directly, through the respondent's member, or through the relay" do
      here = self()
      there = :erlang.binary_to_term(fake_remote(here))
      me = node()
      peers = %{other@host: {self(), make_ref()}}
      # on this node: directly; on a peer: through it
      assert Synod.Hub.Replies.route([here, there], me, peers, nil) ==
               {[here], %{other@host: [there]}}

      # a respondent on a node that is no peer: through the relay if it is one, else directly
      assert Synod.Hub.Replies.route([there], me, %{}, :other@host) == {[there], %{}}

      assert Synod.Hub.Replies.route([there], me, %{relay@host: :p}, :relay@host) ==
               {[], %{relay@host: [there]}}

      assert Synod.Hub.Replies.route([there], me, %{relay@host: :p}, me) == {[there], %{}}
    end

    test "rows without a copy go to their owners other than this node" do
      ring = Synod.Ring.new([:a, :b, :c], [])
      orphans = for i <- 1..60, do: {"o-#{i}", @spec_ok, nil}
      by = Placement.by_owner(ring, 2, :a, orphans)
      refute Map.has_key?(by, :a)

      # replication factor 1 (one ring call): each orphan to its one owner
      by1 = Placement.by_owner(ring, 1, :a, orphans)
      refute Map.has_key?(by1, :a)

      for {id, _, _} = orphan <- orphans,
          [owner] = Placement.owners(ring, 1, id),
          owner != :a,
          do: assert(orphan in Map.fetch!(by1, owner))

      assert Enum.sum(Enum.map(by1, fn {_, l} -> length(l) end)) ==
               Enum.count(orphans, fn {id, _, _} -> Placement.owners(ring, 1, id) != [:a] end)

      for {id, _, _} = orphan <- orphans, owner <- Placement.owners(ring, 2, id), owner != :a do
        assert orphan in Map.fetch!(by, owner)
      end

      assert Enum.sum(Enum.map(by, fn {_, list} -> length(list) end)) ==
               Enum.count(
                 for {id, _, _} <- orphans, o <- Placement.owners(ring, 2, id), o != :a, do: o
               )
    end
  end

  describe "Events" do
    alias Synod.Hub.Events

    test "hub events map to the agreed telemetry; other events to none" do
      me = self()

      assert Events.telemetry(:h, :a, :children_started, {:b, [{1, me}, {2, me}]}) == [
               {:telemetry, [:synod, :hub, :children, :started], %{count: 2},
                %{hub: :h, node: :b}}
             ]

      assert [{:telemetry, [:synod, :hub, :children, :stopped], %{count: 1}, %{node: :a}}] =
               Events.telemetry(:h, :a, :children_stopped, {:a, [{1, me}]})

      assert Events.telemetry(:h, :a, :children_stopped, {:a, []}) == []

      assert [
               {:telemetry, [:synod, :hub, :children, :migrated], %{count: 1},
                %{from: :a, to: :c}}
             ] = Events.telemetry(:h, :a, :children_migrated, {:a, :c, [{1, me}]})

      assert [
               {:telemetry, [:synod, :hub, :partition], %{members: 1},
                %{hub: :h, node: :a, state: :partitioned}}
             ] = Events.telemetry(:h, :a, :partitioned, [:a])

      assert [{:telemetry, _, %{members: 2}, %{state: :healed}}] =
               Events.telemetry(:h, :a, :healed, [:a, :b])

      assert Events.telemetry(:h, :a, :member_joined, :b) == []
      assert Events.telemetry(:h, :a, :my_event, %{}) == []

      assert Events.redistribution(:h, :a, {:left, :b}, 1234, 7) == [
               {:telemetry, [:synod, :hub, :redistribution, :stop], %{duration: 1234, moved: 7},
                %{hub: :h, node: :a, reason: {:left, :b}}}
             ]
    end
  end

  describe "PartitionStrategy" do
    defmodule NeedsTwo do
      @moduledoc false
      # an application's own strategy: partitioned while it sees fewer than two members
      @behaviour Synod.Hub.PartitionStrategy
      @impl true
      def partitioned?(seen, _known), do: length(seen) < 2
    end

    test "the built-ins decide as documented" do
      alias Synod.Hub.PartitionStrategy, as: P
      majority = P.module(:majority)
      refute P.module(:divergence).partitioned?([:a], [:a, :b, :c])
      assert majority.partitioned?([:a], [:a, :b, :c])
      refute majority.partitioned?([:a, :b], [:a, :b, :c])
      assert majority.partitioned?([:a, :b], [:a, :b, :c, :d])
      refute majority.partitioned?([:a], [:a])
      assert P.valid?(NeedsTwo) and P.valid?(:majority)
      refute P.valid?(String) or P.valid?(:no_such_module) or P.valid?("majority")
    end

    test "a hub with an application's strategy follows it" do
      start_supervised!({Synod, name: :hub_needs_two, partition_strategy: NeedsTwo})
      assert Synod.partitioned?(:hub_needs_two)

      assert {:error, :partitioned} =
               Synod.start_children(:hub_needs_two, [%{id: "x", start: @spec_ok}])

      assert {:error, :partitioned} = Synod.stop_children(:hub_needs_two, ["x"])
    end
  end

  describe "Stray" do
    test "bad requests are named, bad callers recognised, warnings rate-limited" do
      assert Stray.bad_request({:what}) == {:error, {:bad_request, {:what}}}
      assert Stray.from?({self(), make_ref()})
      refute Stray.from?(:nobody)
      refute Stray.from?({:not_a_pid, :tag})

      log =
        capture_log(fn ->
          for i <- 1..50, do: Stray.ignored("test process", :message, i)
        end)

      assert length(String.split(log, "ignored a message")) - 1 == 1
    end
  end
end
