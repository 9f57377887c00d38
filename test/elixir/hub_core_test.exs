defmodule Synod.HubCoreTest do
  # The hub's pure modules added by issue 17, driven directly, without a
  # coordinator or peers: the protocol check, the registry row's slot, the
  # event queue, the event options, and the stray-input helpers.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  alias Synod.Hub.{EventQueue, Options, Protocol, Registry, Stray}

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
            {:synod_unregistered, :n@h, [{"x", me}], {:stopped, 12}, []},
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

      assert_raise ArgumentError, ~r/option :discard_event must be a boolean/, fn ->
        Options.event!(%{discard_event: :yes})
      end

      assert_raise ArgumentError, "unknown option :drop", fn -> Options.event!(%{drop: true}) end
      assert_raise ArgumentError, ~r/option :members/, fn -> Options.event!(members: :some) end
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
