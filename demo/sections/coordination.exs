# Demo section: coordination primitives on the replicated store. Loaded by
# demo/cluster.exs with Code.require_file and run as
# Synod.Demo.Coordination.run(nodes) on three fresh peer nodes.
#
# It starts a store of 3 voters, elects a leader among three TTL candidates
# (claim handlers, leader watch, fencing tokens), hands leadership over by
# stopping the leader, then has four processes take one lock in turn and
# prints the fencing token of every grant, and ends with 10 x 10 atomic
# increments. The candidates and lock holders run on this node (functions
# defined in this file cannot run on the peers); every store request goes
# to the store's leader on the peers.

defmodule Synod.Demo.Coordination do
  alias Synod.{Election, Lock, Store, Values}

  @store :demo_coord

  def run(nodes) do
    section("Coordination: a TTL election, a lock's fencing tokens, atomic transforms")
    dir = Path.join(System.tmp_dir!(), "synod-demo-coord-#{System.unique_integer([:positive])}")

    try do
      :ok = Store.start(@store, nodes, dir)
      wait_store()
      election()
      lock()
      values()
    after
      for n <- nodes, do: :erpc.call(n, Store, :stop_member, [@store])
      File.rm_rf(dir)
    end
  end

  defp election do
    {:ok, _watcher} = Election.watch(@store, :demo)
    me = self()
    handler = fn claim -> send(me, {:claim_handler, claim}) end

    candidates =
      for id <- ["alpha", "beta", "gamma"] do
        {:ok, c} = Election.candidate(@store, :demo, id, ttl: 2_000, handlers: [handler])
        c
      end

    say(
      "three candidates (TTL 2 s) start; each claim is one txn: 'seat absent -> put it with my record and lease'"
    )

    for c <- candidates do
      {:ok, role} = Election.start(c)
      say("  Synod.Election.start(#{c.id}) answers after its first claim: #{inspect(role)}")
    end

    %{candidate_id: first, token: t1} = wait_claim()
    say("  #{first} won; its claim handler ran with fencing token #{t1}")
    {:ok, record} = Election.get(@store, :demo)
    say("  the stored election record (Synod.Election.get/3): #{inspect(record)}")
    Process.sleep(2_500)
    say("  2.5 s later (renewals every TTL/3):")
    show(candidates)
    {:ok, holder} = Election.leader(@store, :demo)
    say("  Synod.Election.leader/2 reads the seat: #{holder}")

    leader = Enum.find(candidates, &Election.leader?/1)
    :ok = Election.stop(leader)

    say(
      "stopped #{leader.id}: leader? false at once, seat deleted (only if its mod_revision is still ours)"
    )

    %{candidate_id: next, token: t2} = wait_claim()

    say(
      "  the others were waiting on a watch of the seat: #{next} claimed it, token #{t2} (> #{t1})"
    )

    changes = drain_leader_watch()
    say("  leader watch saw: " <> Enum.map_join(changes, " -> ", &(&1.leader || "(empty)")))
    Enum.each(candidates, &Election.close/1)
  end

  defp lock do
    say("\nfour processes take the lock \"demo/report\" twice each (TTL 5 s), holding it 20 ms:")
    me = self()

    tasks =
      for p <- 1..4 do
        Task.async(fn ->
          for _ <- 1..2 do
            {:ok, token} =
              Lock.lock(
                @store,
                "demo/report",
                fn token ->
                  send(me, {:granted, p, token})
                  Process.sleep(20)
                  token
                end,
                ttl: 5_000
              )

            token
          end
        end)
      end

    Task.await_many(tasks, 30_000)
    grants = collect_grants([])

    say(
      "  grants in order (process:token): " <>
        Enum.map_join(grants, "  ", fn {p, t} -> "P#{p}:#{t}" end)
    )

    tokens = Enum.map(grants, &elem(&1, 1))

    say(
      "  tokens only grow: #{tokens == Enum.sort(tokens)}; waiters are served in the order they queued"
    )

    holder =
      Task.async(fn ->
        Lock.lock(
          @store,
          "demo/report",
          fn t ->
            send(me, {:holding, t})
            Process.sleep(300)
          end,
          ttl: 5_000
        )
      end)

    receive do
      {:holding, t} ->
        result = Lock.try_lock(@store, "demo/report", fn -> :got_it end, ttl: 5_000)
        say("  while token #{t} holds it, try_lock answers #{inspect(result)}")
    end

    Task.await(holder)
  end

  defp values do
    tasks =
      for _ <- 1..10 do
        Task.async(fn ->
          for _ <- 1..10,
              do:
                {:ok, _} =
                  Values.transform(@store, "demo/counter", fn
                    nil -> 1
                    n -> n + 1
                  end)
        end)
      end

    Task.await_many(tasks, 60_000)
    {:ok, %{"demo/counter" => n}} = Values.get_values(@store, "demo/counter")

    say(
      "\n10 processes x 10 transforms (compare-and-swap on mod_revision, retried on conflict): counter = #{n}"
    )
  end

  defp show(candidates) do
    for c <- candidates, do: say("    #{c.id}: leader? #{Election.leader?(c)}")
  end

  defp wait_claim do
    receive do
      {:claim_handler, claim} -> claim
    after
      15_000 -> raise "demo: no claim within 15 s"
    end
  end

  defp drain_leader_watch(acc \\ []) do
    receive do
      {:synod_election_leader, :demo, _before, after_} -> drain_leader_watch([after_ | acc])
    after
      200 -> Enum.reverse(acc)
    end
  end

  defp collect_grants(acc) do
    receive do
      {:granted, p, t} -> collect_grants([{p, t} | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp wait_store(deadline \\ System.monotonic_time(:millisecond) + 15_000) do
    case Store.revision(@store, timeout: 1_000) do
      {:ok, _} ->
        :ok

      _ ->
        if System.monotonic_time(:millisecond) > deadline, do: raise("demo: no store in 15 s")
        Process.sleep(50)
        wait_store(deadline)
    end
  end

  defp section(title), do: IO.puts("\n== #{title} ==")
  defp say(line), do: IO.puts(line)
end
