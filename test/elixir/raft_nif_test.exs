defmodule Synod.RaftNifTest do
  # The Raft core through the NIF, without the driver: argument checks, and
  # a group of instances wired together in this process.
  use ExUnit.Case, async: true

  describe "arguments" do
    test "a bad config raises badarg naming the problem" do
      cases = [
        {:not_a_map, "config must be a map"},
        {%{}, "id must be"},
        {%{id: 0}, "id must be"},
        {%{id: 4_611_686_018_427_387_904}, "id must be"},
        {%{id: 1, election_tick: 1}, "election_tick"},
        {%{id: 1, heartbeat_tick: 10}, "heartbeat_tick"},
        {%{id: 1, pre_vote: :yes}, "pre_vote"},
        {%{id: 1, async_persist: 1}, "async_persist"},
        {%{id: 1, voters: [1, 1]}, "distinct"},
        {%{id: 1, voters: Enum.to_list(1..65)}, "at most 64"},
        {%{id: 1, voters: [:a]}, "member id"},
        {%{id: 1, hard_state: {1, 2}}, "hard_state"},
        {%{id: 1, snapshot: {1, 1, [1], [], :size, 0}}, "snapshot"},
        {%{id: 1, entries: [{0, 1, 0, ""}]}, "an entry"},
        {%{id: 1, entries: [{1, 1, 3, ""}]}, "an entry"},
        {%{id: 1, entries: :none}, "entries"}
      ]

      for {config, message} <- cases do
        assert_raise ArgumentError, ~r/#{message}/, fn -> :synod_nif.raft_new(config) end
      end
    end

    test "every call checks its instance and arguments" do
      {:ok, r} = :synod_nif.raft_new(%{id: 1, voters: [1]})

      assert_raise ArgumentError, ~r/not a raft instance/, fn ->
        :synod_nif.raft_tick(make_ref())
      end

      assert_raise ArgumentError, ~r/binary/, fn -> :synod_nif.raft_step(r, :msg) end
      assert_raise ArgumentError, ~r/iodata/, fn -> :synod_nif.raft_propose(r, :cmd) end

      assert_raise ArgumentError, ~r/add_learner/, fn ->
        :synod_nif.raft_conf_change(r, :add, 2)
      end

      assert_raise ArgumentError, ~r/member id/, fn ->
        :synod_nif.raft_conf_change(r, :remove, 0)
      end

      assert_raise ArgumentError, ~r/campaign/, fn -> :synod_nif.raft_control(r, :elect, 0) end
      assert_raise ArgumentError, ~r/read context/, fn -> :synod_nif.raft_read_index(r, -1) end

      assert_raise ArgumentError, ~r/snapshot index/, fn ->
        :synod_nif.raft_compact(r, 0, 1, 0)
      end

      assert_raise ArgumentError, ~r/size and checksum/, fn ->
        :synod_nif.raft_compact(r, 1, -1, 0)
      end

      assert_raise ArgumentError, ~r/Ok :: boolean/, fn ->
        :synod_nif.raft_snapshot_received(r, 1, 1, :yes)
      end

      assert {:error, :invalid} = :synod_nif.raft_snapshot_received(r, 1, 1, true)
      assert {:error, :truncated} = :synod_nif.raft_chunk_encode(<<1, 2, 3>>, "x")
    end

    test "raft_persisted checks its seq; async_persist hands out one and applies only after it" do
      {:ok, sync} = :synod_nif.raft_new(%{id: 1, voters: [1]})
      assert {:error, :invalid} = :synod_nif.raft_persisted(sync, 1)
      assert_raise ArgumentError, ~r/persisted seq/, fn -> :synod_nif.raft_persisted(sync, 0) end
      assert_raise ArgumentError, ~r/persisted seq/, fn -> :synod_nif.raft_persisted(sync, :x) end

      {:ok, r} = :synod_nif.raft_new(%{id: 1, voters: [1], async_persist: true})
      # The bootstrap entry: written, not yet durable, so not applied.
      {_hs, seq, nil, [{1, 1, 2, _}], _early, [], [], _, _, _} = :synod_nif.raft_ready(r)
      assert is_integer(seq) and seq > 0
      assert {:error, :invalid} = :synod_nif.raft_persisted(r, seq + 1)
      assert :ok = :synod_nif.raft_persisted(r, seq)
      assert :ok = :synod_nif.raft_persisted(r, seq)
      assert {_, false, nil, [], _, [], [{1, 1, 2, _}], _, _, _} = :synod_nif.raft_ready(r)
    end

    test "malformed messages are refused with a reason, and the instance goes on" do
      {:ok, r} = :synod_nif.raft_new(%{id: 1, voters: [1, 2, 3]})
      assert {:error, _} = :synod_nif.raft_step(r, <<>>)
      assert {:error, :version} = :synod_nif.raft_step(r, <<99, 1, 2, 3>>)

      for _ <- 1..200 do
        assert {:error, _} = :synod_nif.raft_step(r, :rand.bytes(:rand.uniform(64)))
      end

      assert %{role: :follower, term: _} = :synod_nif.raft_status(r)
      assert {:error, :not_leader} = :synod_nif.raft_propose(r, "x")
      assert {:error, :too_large} = :synod_nif.raft_propose(r, :binary.copy(<<0>>, 1_048_577))
    end
  end

  describe "a group in one process" do
    test "three instances elect a leader, replicate and commit, and restart from their state" do
      ids = [11, 22, 33]
      group = Map.new(ids, &{&1, new(%{id: &1, voters: ids, seed: &1})})
      {group, log} = run(group, %{}, 200)

      [leader] = for {id, r} <- group, :synod_nif.raft_status(r).role == :leader, do: id
      assert {:ok, index, term} = :synod_nif.raft_propose(group[leader], "hello")
      {group, log} = run(group, log, 20)

      for id <- ids do
        assert {^index, ^term, 0, "hello"} = List.keyfind(log[id].committed, index, 0)
        assert %{commit: ^index, leader: ^leader} = :synod_nif.raft_status(group[id])
      end

      # Restart one member from what it persisted: it comes back with the
      # same term and vote, and the same log.
      victim = hd(ids -- [leader])
      %{hard_state: {t, v, c}, entries: entries} = log[victim]
      {:ok, r} = :synod_nif.raft_new(%{id: victim, hard_state: {t, v, c}, entries: entries})
      assert %{term: ^t, vote: ^v, last_index: last} = :synod_nif.raft_status(r)
      assert last == length(entries)
    end
  end

  defp new(config) do
    {:ok, r} = :synod_nif.raft_new(Map.merge(%{election_tick: 4, heartbeat_tick: 1}, config))
    r
  end

  # Ticks every instance `rounds` times, delivering messages between them and
  # recording what each persisted (hard state, entries) and applied.
  defp run(group, log, 0), do: {group, log}

  defp run(group, log, rounds) do
    for {_, r} <- group, do: :ok = :synod_nif.raft_tick(r)
    log = deliver(group, log)
    run(group, log, rounds - 1)
  end

  defp deliver(group, log) do
    {log, msgs} =
      Enum.reduce(group, {log, []}, fn {id, r}, {log, msgs} ->
        case :synod_nif.raft_ready(r) do
          :none ->
            {log, msgs}

          {hs, sync?, nil, entries, early, out, committed, _events, _reads, []} ->
            # The core asks for an fsync whenever a Ready holds entries.
            assert sync? or entries == []
            out = early ++ out
            mine = Map.get(log, id, %{hard_state: {0, 0, 0}, entries: [], committed: []})

            kept =
              Enum.reject(mine.entries, fn {i, _, _, _} ->
                entries != [] and i >= elem(hd(entries), 0)
              end)

            mine = %{
              hard_state: hs || mine.hard_state,
              entries: kept ++ entries,
              committed: mine.committed ++ committed
            }

            {Map.put(log, id, mine), msgs ++ out}
        end
      end)

    if msgs == [] do
      log
    else
      for {to, bin} <- msgs, do: :ok = :synod_nif.raft_step(group[to], bin)
      deliver(group, log)
    end
  end
end
