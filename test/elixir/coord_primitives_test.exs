defmodule Synod.CoordPrimitivesTest do
  # Election, locks and values on a store of 3 voters on real peers (one
  # cluster for the module; each test uses its own keys).
  use ExUnit.Case, async: false

  alias Synod.{Election, Lock, Store, Values}
  alias Synod.Test.Coord
  alias Synod.Test.Coord.Checker

  @moduletag timeout: 120_000
  @store :coord_primitives

  setup_all do
    %{nodes: nodes} = Synod.Test.Cluster.store!(3, prefix: "cp", store: @store)
    {:ok, nodes: nodes}
  end

  defp on(node, mod, fun, args), do: :erpc.call(node, mod, fun, args, 30_000)

  describe "values" do
    test "20 processes x 20 transforms on 3 nodes end at exactly 400", %{nodes: nodes} do
      results = Coord.concurrent_increments(nodes, 20, @store, "v/counter", 20)
      assert Enum.all?(results, &(&1 == {20, 0, []})), inspect(results)

      assert {:ok, %{"v/counter" => 400}} =
               on(hd(nodes), Values, :get_values, [@store, "v/counter"])
    end

    test "try_transform runs once and reports the value that won", %{nodes: [_, b, _]} do
      # (Functions defined here run on this node: peers cannot load this file.)
      assert {:ok, 1} = Values.transform(@store, "v/once", fn nil -> 1 end)
      {:ok, kv} = Store.get(@store, "v/once")
      # A write between the read and the swap: the swap conflicts, once.
      me = self()

      slow = fn n ->
        send(me, :ran)
        Process.sleep(300)
        n + 10
      end

      task = Task.async(fn -> Values.try_transform(@store, "v/once", slow) end)
      Process.sleep(100)
      assert {1, 0, []} = on(b, Coord, :increments, [@store, "v/once", 1])
      assert {:conflict, 2} = Task.await(task)
      assert_received :ran
      refute_received :ran
      assert {:ok, %{"v/once" => 2}} = Values.get_values(@store, "v/once")
      # Same value and version again after a delete and re-create: still a
      # conflict for a swap that read the old key (revisions, not versions).
      {:ok, _, 1, _} = Store.delete(@store, "v/once")
      {:ok, _, nil} = Store.put(@store, "v/once", :erlang.term_to_binary(1))
      {:ok, kv2} = Store.get(@store, "v/once")
      assert kv2.version == kv.version and kv2.value == kv.value
      assert kv2.mod_revision > kv.mod_revision
      assert {:ok, 3} = Values.try_transform(@store, "v/once", fn 1 -> 3 end)
    end

    test "get_values reads a key or a prefix's direct children; codecs" do
      for {k, v} <- [{"v/dir/a", 1}, {"v/dir/b", %{x: [1, 2]}}, {"v/dir/sub/c", 3}, {"v/dirx", 4}],
          do: {:ok, _} = Values.transform(@store, k, fn _ -> v end)

      assert {:ok, %{"v/dir/a" => 1, "v/dir/b" => %{x: [1, 2]}}} ==
               Values.get_values(@store, "v/dir/")

      assert {:ok, %{"v/dirx" => 4}} == Values.get_values(@store, "v/dirx")
      assert {:ok, %{}} == Values.get_values(@store, "v/none")

      # Stored as term_to_binary; raw bytes are not terms unless read as :binary.
      {:ok, kv} = Store.get(@store, "v/dir/a")
      assert kv.value == :erlang.term_to_binary(1)
      {:ok, _, nil} = Store.put(@store, "v/raw", "plain bytes")
      assert {:error, {:not_a_term, "v/raw"}} = Values.get_values(@store, "v/raw")

      assert {:ok, %{"v/raw" => "plain bytes"}} =
               Values.get_values(@store, "v/raw", codec: :binary)

      assert {:ok, "plain bytes!"} =
               Values.transform(@store, "v/raw", &(&1 <> "!"), codec: :binary)

      assert_raise ArgumentError, fn ->
        Values.transform(@store, "v/raw", fn _ -> 1 end, codec: :binary)
      end

      assert_raise ArgumentError, fn -> Values.get_values(@store, "v/raw", codec: :json) end
    end
  end

  describe "locks" do
    test "many holders on 3 nodes never overlap; fencing tokens grow", %{nodes: nodes} do
      {:ok, checker} = Checker.start()
      results = Coord.lock_contenders(nodes, 3, @store, "l/mutex", 5_000, 5, checker, 2)
      assert Enum.all?(results, &(&1 == {5, []})), inspect(results)
      report = Checker.report(checker)
      assert report.violations == []
      assert report.grants == 45
      tokens = Enum.map(report.tokens, &elem(&1, 0))
      assert tokens == Enum.sort(tokens) and length(Enum.uniq(tokens)) == 45
      # Every contender key is gone.
      assert {:ok, [], 0, false} =
               Store.range(@store, Lock.contenders_prefix("l/mutex"), prefix: true)
    end

    test "try_lock fails at once while the lock is held; fun raising releases", %{
      nodes: [a, b, _]
    } do
      me = self()

      holder =
        spawn(fn ->
          Lock.lock(
            @store,
            "l/try",
            fn token ->
              send(me, {:holding, token})

              receive do
                :release -> :ok
              end
            end,
            ttl: 5_000
          )

          send(me, :released)
        end)

      assert_receive {:holding, t1}, 10_000
      assert {:error, :locked} = on(b, Coord, :try_lock_token, [@store, "l/try", 5_000])
      send(holder, :release)
      assert_receive :released, 10_000
      # try_lock returns the fencing token of its grant with fun's result.
      assert {:ok, t2, t2} = on(b, Coord, :try_lock_token, [@store, "l/try", 5_000])
      assert t2 > t1

      assert_raise RuntimeError, fn ->
        Lock.lock(@store, "l/try", fn -> raise "inside" end, ttl: 5_000)
      end

      assert {:ok, t3, t3} = on(a, Coord, :try_lock_token, [@store, "l/try", 5_000])
      assert t3 > t2
    end

    test "a holder that dies releases at once (not after its TTL)", %{nodes: [a, b, _]} do
      me = self()
      ttl = 60_000

      holder = Node.spawn(a, Coord, :hold_lock, [@store, "l/dead", ttl, me])
      assert_receive {:holding, t1}, 10_000

      waiter =
        Task.async(fn -> on(b, Coord, :lock_token, [@store, "l/dead", ttl, [timeout: 50_000]]) end)

      Process.sleep(300)
      assert Task.yield(waiter, 0) == nil
      Process.exit(holder, :kill)
      # Granted well before the 60 s TTL could have run out.
      assert {:ok, t2} = Task.await(waiter, 20_000)
      assert t2 > t1
    end

    test "bad arguments raise, naming the argument; ttl is optional" do
      assert_raise ArgumentError, ~r/argument key/, fn -> Lock.lock(@store, "", fn -> :ok end) end

      assert_raise ArgumentError, ~r/option ttl/, fn ->
        Lock.lock(@store, "k", fn -> :ok end, ttl: 5)
      end

      assert_raise ArgumentError, ~r/argument fun/, fn ->
        Lock.lock(@store, "k", fn _, _ -> :ok end)
      end

      assert_raise ArgumentError, ~r/unknown option :nope/, fn ->
        Lock.lock(@store, "k", fn -> :ok end, nope: 1)
      end

      assert {:ok, :default_ttl} = Lock.lock(@store, "l/default", fn -> :default_ttl end)
    end

    test "an unknown store is a named error at once" do
      assert {:error, {:unknown_store, :nope}} = Lock.lock(:nope, "k", fn -> :ok end)
      assert {:error, {:unknown_store, :nope}} = Lock.try_lock(:nope, "k", fn -> :ok end)
      assert {:error, {:unknown_store, :nope}} = Values.get_values(:nope, "k")
      assert {:error, {:unknown_store, :nope}} = Values.transform(:nope, "k", fn _ -> 1 end)
    end
  end

  describe "election" do
    test "claim, wait by watch, stop hands over; handlers, subscribers, leader watch",
         %{nodes: [a, b, _]} do
      {:ok, _watcher} = Election.watch(@store, :e1)
      assert_receive {:synod_election_leader, :e1, nil, %{leader: nil}}, 5_000

      ca = on(a, Coord, :candidate, [@store, :e1, "A", 2_000, self()])
      cb = on(b, Coord, :candidate, [@store, :e1, "B", 2_000, self()])
      # start answers after the first claim attempt, and is idempotent.
      assert {:ok, :leader} = Election.start(ca)
      assert Election.leader?(ca)
      assert {:ok, :leader} = Election.start(ca)
      assert_receive {:claimed, "A", token_a, []}, 10_000
      assert_receive {:synod_election, :e1, "A", {:elected, ^token_a}}
      assert Election.leader?(ca)
      assert {:ok, "A"} = Election.leader(@store, :e1)

      assert_receive {:synod_election_leader, :e1, %{leader: nil},
                      %{leader: "A", token: ^token_a}},
                     5_000

      assert {:ok, :follower} = Election.start(cb)
      # B waits; A keeps renewing past several TTLs.
      Process.sleep(2_500)
      assert Election.leader?(ca) and not Election.leader?(cb)
      refute_received {:claimed, "B", _, _}

      :ok = Election.stop(ca)
      :ok = Election.stop(ca)
      refute Election.leader?(ca)
      assert_receive {:synod_election, :e1, "A", {:deposed, ^token_a, :stopped}}
      assert_receive {:claimed, "B", token_b, []}, 10_000
      assert token_b > token_a
      assert Election.leader?(cb)

      # The seat is deleted, then B's claim creates it: two changes.
      assert_receive {:synod_election_leader, :e1, %{leader: "A"}, %{leader: nil}}, 5_000

      assert_receive {:synod_election_leader, :e1, %{leader: nil},
                      %{leader: "B", token: ^token_b}},
                     5_000

      # Started again, A waits behind B.
      assert {:ok, :follower} = Election.start(ca)
      Process.sleep(300)
      refute Election.leader?(ca)
      :ok = Election.stop(cb)
      assert_receive {:claimed, "A", token_a2, []}, 10_000
      assert token_a2 > token_b
      :ok = Election.stop(ca)
      assert {:ok, nil} = Election.leader(@store, :e1)
    end

    test "a candidate restarted with the same id rediscovers its claim", %{nodes: [a, _, _]} do
      c1 = on(a, Coord, :candidate, [@store, :e2, "R", 5_000, self()])
      {:ok, :leader} = Election.start(c1)
      assert_receive {:claimed, "R", token, []}, 10_000
      # The candidate process dies without releasing; its lease lives on.
      on(a, Process, :exit, [c1.pid, :kill])
      refute Election.leader?(c1)
      c2 = on(a, Coord, :candidate, [@store, :e2, "R", 5_000, self()])
      assert {:ok, :leader} = Election.start(c2)
      assert_receive {:claimed, "R", ^token, []}, 10_000
      assert Election.leader?(c2)
      :ok = Election.stop(c2)
    end

    test "a paused leader's leader? is false before anyone else is granted", %{nodes: [a, b, _]} do
      ttl = 1_000
      ca = on(a, Coord, :candidate, [@store, :e3, "P", ttl, self()])
      {:ok, :leader} = Election.start(ca)
      assert_receive {:claimed, "P", token_p, []}, 10_000
      # Q's claim handler reads P's leader? the moment Q is granted.
      cq = on(b, Coord, :candidate, [@store, :e3, "Q", ttl, self(), [ca]])
      {:ok, :follower} = Election.start(cq)
      Process.sleep(ttl)
      assert Election.leader?(ca)
      suspender = on(a, Coord, :suspend, [ca.pid])
      # Suspended, P renews nothing: its deadline is fixed from now on.
      until = on(a, Coord, :leader_until_shared, [ca])
      assert is_integer(until)
      assert_receive {:claimed, "Q", token_q, [false]}, 15_000
      assert_receive {:claimed_at, "Q", ^token_q, granted_at}
      assert granted_at >= until
      assert token_q > token_p
      send(suspender, :resume)
      # P learns it lost: deposed, and waits behind Q.
      assert_receive {:synod_election, :e3, "P", {:deposed, ^token_p, _}}, 10_000
      refute Election.leader?(ca)
      :ok = Election.stop(cq)
      assert_receive {:claimed, "P", _, []}, 10_000
      :ok = Election.stop(ca)
    end

    test "the stored record, by name and in watches, under a custom root; handlers ended" do
      me = self()
      root = "apps/x/"

      trapping = fn claim ->
        Process.flag(:trap_exit, true)
        send(me, {:handler, :trapping, self(), claim.token})

        receive do
          {:EXIT, _from, reason} -> send(me, {:ended, reason})
        end
      end

      plain = fn claim ->
        send(me, {:handler, :plain, self(), claim.token})
        Process.sleep(:infinity)
      end

      {:ok, _watcher} = Election.watch(@store, :rec, self(), root: root)
      assert_receive {:synod_election_leader, :rec, nil, %{leader: nil, record: nil}}, 5_000

      {:ok, c} =
        Election.candidate(@store, :rec, "R1", ttl: 2_000, root: root, handlers: [trapping, plain])

      assert {:ok, :leader} = Election.start(c)
      # Nothing from outside crashes the candidate.
      assert {:error, :unknown_call} = GenServer.call(c.pid, :bogus)
      GenServer.cast(c.pid, :bogus)
      send(c.pid, {:bogus, make_ref()})
      assert Election.leader?(c)
      assert_receive {:handler, :trapping, _, token}, 5_000
      assert_receive {:handler, :plain, plain_pid, ^token}, 5_000
      monitor = Process.monitor(plain_pid)

      assert {:ok, %{name: :rec, leader_id: "R1", revision: ^token, created_at: at}} =
               Election.get(@store, :rec, root: root)

      assert is_integer(at)
      assert {:ok, "R1"} = Election.leader(@store, :rec, root: root)
      assert {:ok, %{create_revision: ^token}} = Store.get(@store, root <> "rec")
      # The default root is another seat.
      assert {:ok, nil} = Election.get(@store, :rec)

      assert_receive {:synod_election_leader, :rec, %{leader: nil},
                      %{
                        leader: "R1",
                        token: ^token,
                        record: %{name: :rec, leader_id: "R1", revision: ^token, created_at: ^at}
                      }},
                     5_000

      # The leadership ends: a handler that traps exits is told, one that
      # does not is stopped.
      :ok = Election.stop(c)
      ended = {:shutdown, {:leadership_ended, token, :stopped}}
      assert_receive {:ended, ^ended}, 5_000
      assert_receive {:DOWN, ^monitor, :process, _, ^ended}, 5_000
      :ok = Election.close(c)
    end

    test "an unknown store is a named error at once; bad arguments name themselves" do
      assert {:error, {:unknown_store, :nope}} = Election.candidate(:nope, :e, "x")
      assert {:error, {:unknown_store, :nope}} = Election.leader(:nope, :e)
      assert {:error, {:unknown_store, :nope}} = Election.get(:nope, :e)

      assert_raise ArgumentError, ~r/option ttl/, fn ->
        Election.candidate(@store, :e, "x", ttl: 1)
      end

      assert_raise ArgumentError, ~r/argument candidate_id/, fn ->
        Election.candidate(@store, :e, "")
      end

      assert_raise ArgumentError, ~r/argument election/, fn ->
        Election.candidate(@store, 42, "x")
      end

      assert_raise ArgumentError, ~r/option handlers/, fn ->
        Election.candidate(@store, :e, "x", handlers: [:nope])
      end
    end
  end
end
