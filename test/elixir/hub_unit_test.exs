defmodule Synod.HubUnitTest do
  # The hub's pure parts (options, specs, placement, results) and a
  # single-node hub in this VM (lifecycle, restarts, subscribers).
  use ExUnit.Case, async: false

  alias Synod.{Ring, StartResult, StopResult}
  alias Synod.Hub.{Options, Placement, Registry, Results, Spec}
  alias Synod.Test.{HubWorker, Wait}
  import Synod.Test.HubCase, only: [fake_pid: 1]

  describe "options" do
    test "hub options are validated eagerly, naming the bad option" do
      assert %{name: :h, replication_factor: 1, migration: :cold} = Options.hub!(name: :h)
      assert_raise ArgumentError, "missing option name", fn -> Synod.child_spec([]) end

      assert_raise ArgumentError,
                   ~r/invalid option replication_factor: expected an integer in 1..64/,
                   fn ->
                     Synod.child_spec(name: :h, replication_factor: 0)
                   end

      assert_raise ArgumentError, ~r/invalid option replication_model/, fn ->
        Synod.child_spec(name: :h, replication_model: :x)
      end

      assert_raise ArgumentError, ~r/invalid option partition_strategy/, fn ->
        Synod.child_spec(name: :h, partition_strategy: :x)
      end

      assert_raise ArgumentError, ~r/invalid option migration/, fn ->
        Synod.child_spec(name: :h, migration: :warm)
      end

      assert_raise ArgumentError, ~r/invalid option ring/, fn ->
        Synod.child_spec(name: :h, ring: [vnodes: 0])
      end

      assert_raise ArgumentError, ~r/^unknown option :colour \(known: name, /, fn ->
        Synod.child_spec(name: :h, colour: :red)
      end

      assert_raise ArgumentError, ~r/invalid option name: expected an atom/, fn ->
        Synod.child_spec(name: "h")
      end
    end

    test "call options" do
      assert %{await: true, timeout: 5_000, on_failure: :continue} = Options.start!([])

      assert_raise ArgumentError,
                   ~r/invalid option on_failure: expected one of :continue, :rollback/,
                   fn ->
                     Options.start!(on_failure: :retry)
                   end

      assert_raise ArgumentError, ~r/invalid option metadata: expected nil or a map/, fn ->
        Options.start!(metadata: [tag: 1])
      end

      assert_raise ArgumentError, ~r/^unknown option :on_failure/, fn ->
        Options.stop!(on_failure: :rollback)
      end
    end
  end

  describe "specs" do
    test "normalise, compact, and reject with a reason" do
      assert {:ok, "a", {HubWorker, :start_link, ["a"]}} =
               Spec.normalize(%{id: "a", start: {HubWorker, :start_link, ["a"]}})

      assert {:ok, "b", %{start: _, restart: :temporary}} =
               Spec.normalize(%{
                 id: "b",
                 start: {HubWorker, :start_link, ["b"]},
                 restart: :temporary,
                 shutdown: 5_000
               })

      assert {:ok, HubWorker, {HubWorker, :start_link, [:x]}} = Spec.normalize({HubWorker, :x})
      assert {:error, :missing_start} = Spec.normalize(%{id: 1})

      assert {:error, {:invalid_restart, :sometimes}} =
               Spec.normalize(%{id: 1, start: {M, :f, []}, restart: :sometimes})

      assert {:error, {:unknown_keys, [:colour]}} =
               Spec.normalize(%{id: 1, start: {M, :f, []}, colour: 1})

      assert {:error, {:invalid_child_spec, _}} = Spec.normalize(:not_a_module_at_all)

      assert {:error, [{2, :missing_start}]} =
               Spec.normalize_all([%{id: 1, start: {M, :f, []}}, %{id: 2}])

      # every bad spec reported, in order, good ones between them skipped;
      # good ones alone normalised in order, a full spec compacted
      assert {:error, [{:a, :missing_start}, {:b, :missing_start}]} =
               Spec.normalize_all([%{id: :a}, %{id: 1, start: {M, :f, []}}, %{id: :b}])

      assert {:ok, [{1, {M, :f, []}}, {2, {M, :g, [2]}}]} =
               Spec.normalize_all([
                 %{id: 1, start: {M, :f, []}},
                 {M, :g, [2]} |> then(&%{id: 2, start: &1})
               ])

      assert {:ok, [{3, %{start: {M, :f, []}, restart: :temporary}}]} =
               Spec.normalize_all([%{id: 3, start: {M, :f, []}, restart: :temporary}])

      assert Spec.duplicates([1, 2, 1, 3, 2, 1]) == [1, 2]
    end

    test "ring keys: binaries and atoms as they are, other terms by pinned external format" do
      assert Spec.ring_key("x") == "x"
      assert Spec.ring_key(:x) == :x
      assert Spec.ring_key({:user, 42}) == <<131, 104, 2, 119, 4, "user", 97, 42>>
    end
  end

  describe "placement" do
    setup do
      %{ring: Ring.new([:a, :b, :c]), ring2: Ring.new([:a, :b, :c, :d])}
    end

    test "one owner per id in one ring call, any id", %{ring: ring} do
      binaries = for i <- 1..200, do: "k#{i}"
      mixed = binaries ++ [:atom, {:tuple, 1}, 42, ["list"]]

      for ids <- [binaries, mixed, []] do
        assert Placement.owner_many(ring, ids) ==
                 for(id <- ids, do: hd(Placement.owners(ring, 1, id)))

        assert Placement.owners_many(ring, 1, ids) ==
                 for(id <- ids, do: Placement.owners(ring, 1, id))
      end
    end

    test "groups one batch per owner, modes by preference order", %{ring: ring} do
      children = for i <- 1..200, do: {"k#{i}", {M, :f, []}, nil}
      groups = Placement.group(ring, 1, :active_active, children)
      assert groups |> Map.values() |> Enum.map(&length/1) |> Enum.sum() == 200

      assert Enum.all?(groups, fn {node, entries} ->
               Enum.all?(entries, fn {id, _, _, :active} -> Ring.lookup(ring, id) == node end)
             end)

      groups = Placement.group(ring, 2, :active_passive, children)
      assert groups |> Map.values() |> Enum.map(&length/1) |> Enum.sum() == 400

      for {node, entries} <- groups, {id, _, _, mode} <- entries do
        [first, second] = Ring.owners(ring, id, 2)
        assert node in [first, second]
        assert mode == if(node == first, do: :active, else: :passive)
      end
    end

    test "grouping one request's children with its slot gives the same batches", %{ring: ring} do
      pairs = for i <- 1..300, do: {"k#{i}", {M, :f, [i]}}

      for {rf, model} <- [{1, :active_active}, {2, :active_passive}, {3, :active_active}] do
        assert Placement.group(ring, rf, model, pairs, 1_234) ==
                 Placement.group(ring, rf, model, for({id, spec} <- pairs, do: {id, spec, 1_234}))
      end
    end

    test "reconcile pairs surplus copies with missing owners, the same on every member", %{
      ring2: ring
    } do
      id =
        Enum.find(
          Enum.map(1..1000, &"m#{&1}"),
          &(Ring.owners(ring, &1, 2) |> Enum.sort() == [:a, :d])
        )

      row = {id, {M, :f, []}, nil, [fake_pid(:b), fake_pid(:c)]}
      actions = for me <- [:a, :b, :c, :d], do: {me, Placement.reconcile(me, ring, 2, row)}
      # surplus [b, c] sorted, missing [a, d] sorted: b -> a, c -> d
      assert actions == [a: nil, b: {:migrate, row, :a}, c: {:migrate, row, :d}, d: nil]

      orphan = {id, {M, :f, []}, nil, []}

      assert for(me <- [:a, :b, :c, :d], do: Placement.reconcile(me, ring, 2, orphan)) == [
               {:start, orphan},
               nil,
               nil,
               {:start, orphan}
             ]

      surplus = {id, {M, :f, []}, nil, [fake_pid(:a), fake_pid(:d), fake_pid(:b)]}
      assert Placement.reconcile(:b, ring, 2, surplus) == {:stop, surplus}
      assert Placement.reconcile(:a, ring, 2, surplus) == nil
    end

    test "the batch forms decide as the row-by-row ones", %{ring: ring} do
      ids = for i <- 1..300, do: "b#{i}"
      assert Placement.owners_many(ring, 1, ids) == Enum.map(ids, &Placement.owners(ring, 1, &1))
      assert Placement.owners_many(ring, 2, ids) == Enum.map(ids, &Placement.owners(ring, 2, &1))

      # rows with one copy on :a (a batch :a just started), on :b, none, two
      rows =
        for {id, i} <- Enum.with_index(ids) do
          pids =
            case rem(i, 4) do
              0 -> [fake_pid(:a)]
              1 -> [fake_pid(:b)]
              2 -> []
              3 -> [fake_pid(:a), fake_pid(:c)]
            end

          {id, {M, :f, []}, nil, pids}
        end

      for rf <- [1, 2] do
        {starts, migrations, stops} = Placement.reconcile_many(:a, ring, rf, rows)
        one_by_one = for row <- rows, d = Placement.reconcile(:a, ring, rf, row), do: d
        assert starts == for({:start, row} <- one_by_one, do: row)
        assert stops == for({:stop, row} <- one_by_one, do: row)

        sorted = fn groups ->
          Map.new(groups, fn {target, rows} -> {target, Enum.sort(rows)} end)
        end

        assert sorted.(migrations) ==
                 sorted.(
                   Enum.group_by(
                     for({:migrate, _, _} = m <- one_by_one, do: m),
                     &elem(&1, 2),
                     &elem(&1, 1)
                   )
                 )

        assert starts != [] or migrations != %{}
      end
    end

    test "after a loss, deciding the candidate rows equals deciding every row" do
      :rand.seed(:exsss, {17, 2, 2026})
      nodes = [:a, :b, :c, :d, :e]

      for round <- 1..40 do
        members = Enum.take_random([:b, :c, :d, :e], Enum.random(1..4))
        ring = Synod.Ring.new([:a | members])
        lost = Enum.random([:e, :d, :z])

        rows =
          for i <- 1..300 do
            pids = for _ <- 1..Enum.random(0..4)//1, do: fake_pid(Enum.random(nodes))
            {"id-#{round}-#{i}", {M, :f, []}, nil, pids}
          end

        dropped = for row <- rows, do: Registry.drop_node(row, lost) || row

        for rf <- 1..3 do
          {changed, candidates} = Placement.after_loss(rows, lost, :a, rf)

          assert Enum.sort(changed) ==
                   Enum.sort(for(row <- rows, d = Registry.drop_node(row, lost), do: d))

          assert candidates == Enum.filter(dropped, &(&1 in candidates))
          full = Placement.reconcile_many(:a, ring, rf, dropped)
          fast = Placement.reconcile_many(:a, ring, rf, candidates)
          sorted = fn {s, m, t} -> {s, Map.new(m, fn {k, v} -> {k, Enum.sort(v)} end), t} end
          assert sorted.(fast) == sorted.(full)

          # the table's pass (which for rf 1 selects before it decides)
          # keeps the same rows and stores the same changes
          table = :ets.new(:loss, [:set])
          :ets.insert(table, rows)

          assert Enum.sort(Synod.Hub.Table.drop_lost(table, lost, :a, rf)) ==
                   Enum.sort(candidates)

          assert Enum.sort(Synod.Hub.Table.rows(table)) == Enum.sort(dropped)
          :ets.delete(table)

          one_by_one = for row <- dropped, d = Placement.reconcile(:a, ring, rf, row), do: d
          {starts, _, stops} = full
          assert starts == for({:start, row} <- one_by_one, do: row)
          assert stops == for({:stop, row} <- one_by_one, do: row)
          # the skipped rows are not a trivial share
          if rf == 1 and lost != :z, do: assert(length(candidates) < length(dropped))
        end
      end
    end

    test "a batch of copies leaves its rows as one remove_pid/4 per copy does" do
      :rand.seed(:exsss, {3, 12, 2026})
      nodes = [:a, :b, :c]

      for reason <- [{:stopped, 7}, :stopped, :migrating, :suspended], round <- 1..20 do
        rows =
          for i <- 1..60 do
            pids = for _ <- 1..Enum.random(0..3)//1, do: fake_pid(Enum.random(nodes))
            {"id-#{round}-#{i}", {M, :f, []}, nil, pids}
          end

        # copies named by the announcement: most in their row, some not,
        # some ids without a row
        stopped =
          for {id, _, _, pids} <- Enum.take_random(rows, 40) ++ [{"gone", nil, nil, []}] do
            {id,
             if(pids != [] and :rand.uniform(4) > 1, do: Enum.random(pids), else: fake_pid(:b))}
          end

        [one, batch] =
          for _ <- 1..2 do
            table = :ets.new(:rows, [:set])
            Synod.Hub.Table.insert(table, rows)
            table
          end

        expected =
          for {id, pid} <- stopped,
              row = Synod.Hub.Table.remove_pid(one, id, pid, reason),
              do: row

        assert Synod.Hub.Table.remove_pids(batch, stopped, reason) == expected
        assert Enum.sort(:ets.tab2list(batch)) == Enum.sort(:ets.tab2list(one))
      end
    end

    test "a peer's stop request takes that node's copy out of each row (remove_node_copies/3)" do
      :rand.seed(:exsss, {4, 12, 2026})
      nodes = [:a, :b, :c]

      for round <- 1..20 do
        rows =
          for i <- 1..60 do
            pids = for node <- Enum.take_random(nodes, Enum.random(0..3)), do: fake_pid(node)
            {"id-#{round}-#{i}", {M, :f, []}, nil, pids}
          end

        ids = Enum.map(Enum.take_random(rows, 40), &elem(&1, 0)) ++ ["gone"]
        table = :ets.new(:rows, [:set, :compressed])
        Synod.Hub.Table.insert(table, rows)
        by_id = Map.new(rows, &{elem(&1, 0), &1})

        # the rule, row by row: the copy on :b leaves; a row left without a
        # copy goes; rows without a copy there stay as they were
        {gone, kept} =
          Enum.reduce(ids, {[], []}, fn id, {gone, kept} ->
            case by_id do
              %{^id => {_, spec, slot, pids} = row} ->
                case Enum.split_with(pids, &(node(&1) == :b)) do
                  {[], _} -> {gone, [row | kept]}
                  {[pid], []} -> {[{id, pid} | gone], kept}
                  {[pid], rest} -> {[{id, pid} | gone], [{id, spec, slot, rest} | kept]}
                end

              _ ->
                {gone, kept}
            end
          end)

        assert Synod.Hub.Table.remove_node_copies(table, ids, :b) ==
                 {Enum.reverse(gone), Enum.reverse(kept)}

        for {id, _} <- gone,
            not Enum.any?(kept, &(elem(&1, 0) == id)),
            do: refute(:ets.member(table, id))

        for {id, _, _, _} = row <- kept, do: assert(Synod.Hub.Table.row(table, id) == row)

        assert Synod.Hub.Table.copy_rows(table, Enum.take(ids, 5)) ==
                 for(id <- Enum.take(ids, 5), do: copies_row(table, id))
      end
    end

    defp copies_row(table, id) do
      case Synod.Hub.Table.row(table, id) do
        nil -> nil
        {^id, _, _, pids} -> {id, nil, nil, pids}
      end
    end

    test "the copies of an id read from its row's copies alone, none without a row" do
      table = :ets.new(:rows, [:set, :compressed])
      [p, q] = [fake_pid(:b), fake_pid(:c)]

      Synod.Hub.Table.insert(table, [
        {"one", {M, :f, []}, 3, [p]},
        {"two", {M, :f, []}, nil, [p, q]}
      ])

      :ets.insert(table, {"none", {M, :f, []}, nil, []})
      assert Synod.Hub.Table.pids(table, "one") == [p]
      assert Synod.Hub.Table.pids(table, "two") == [p, q]
      assert Synod.Hub.Table.pids(table, "none") == []
      assert Synod.Hub.Table.pids(table, "missing") == []

      assert Synod.Hub.Table.locate(table, ["missing", "two", "one", "none"]) ==
               [{"two", [p, q]}, {"one", [p]}, {"none", []}]
    end

    test "mode changes only where the first owner changed", %{ring: ring, ring2: ring2} do
      ids = for i <- 1..500, do: "x#{i}"

      for id <- ids do
        [o1 | _] = Ring.owners(ring, id, 2)
        [n1, n2] = Ring.owners(ring2, id, 2)
        change = Placement.mode_change(n1, :active_passive, 2, ring, ring2, id)
        assert change == if(o1 == n1, do: nil, else: :active)
        assert Placement.mode_change(n2, :active_active, 2, ring, ring2, id) == nil
      end
    end

    test "minority" do
      assert Placement.minority?(1, 3)
      refute Placement.minority?(2, 3)
      assert Placement.minority?(2, 4)
      refute Placement.minority?(3, 5)
      refute Placement.minority?(1, 1)
    end
  end

  describe "results" do
    test "per-node answers, failures and the deadline" do
      r = Results.new(:start, %{a: [1, 2], b: [3], c: [4]})
      r = Results.record(r, :a, [{1, {:ok, :p1}}, {2, {:error, :boom}}, {9, {:ok, :stray}}])
      refute Results.done?(r)
      r = Results.fail_node(r, :b, {:nodedown, :b})
      r = Results.fail_all(r, :timeout)
      assert Results.done?(r)

      assert {:error, %StartResult{started: [{1, :a, :p1}], errors: errors}} = Results.finish(r)
      assert Enum.sort(errors) == [{2, :a, :boom}, {3, :b, {:nodedown, :b}}, {4, :c, :timeout}]
    end

    test "a batch answered whole, in the order sent or not, short or with a stranger" do
      ids = Enum.to_list(1..50)
      answers = for id <- ids, do: {id, {:ok, id * 10}}
      in_order = Results.record(Results.new(:start, %{a: ids, b: [99]}), :a, answers)

      shuffled =
        Results.record(Results.new(:start, %{a: ids, b: [99]}), :a, Enum.reverse(answers))

      for r <- [in_order, shuffled] do
        refute Results.done?(r)
        r = Results.record(r, :b, [{99, {:error, :boom}}])
        assert Results.done?(r)
        {:error, %StartResult{started: started, errors: [{99, :b, :boom}]}} = Results.finish(r)
        assert Enum.sort(started) == for(id <- ids, do: {id, :a, id * 10})
      end

      # one answer missing, or one for another id in its place: still pending
      short = Results.record(Results.new(:start, %{a: ids}), :a, tl(answers))
      refute Results.done?(short)
      other = Results.record(Results.new(:start, %{a: ids}), :a, [{0, {:ok, 0}} | tl(answers)])
      refute Results.done?(other)
      assert Results.done?(Results.record(other, :a, [{1, {:ok, 10}}]))
    end

    test "a stop answered with the pids alone ({:stopped, pids}, in the order sent)" do
      [p1, p2, p3] = for node <- [:a, :a, :b], do: fake_pid(node)
      r = Results.new(:stop, %{a: [1, 2], b: [3]})
      r = Results.record(r, :a, {:stopped, [p1, p2]})
      refute Results.done?(r)
      # the wrong count, a non-pid, or a node not asked: ignored, still pending
      assert Results.record(r, :b, {:stopped, [p3, p3]}) == r
      assert Results.record(r, :b, {:stopped, [:nope]}) == r
      assert Results.record(r, :b, {:stopped, :nope}) == r
      assert Results.record(r, :z, {:stopped, [p3]}) == r
      r = Results.record(r, :b, {:stopped, [p3]})
      assert Results.done?(r)

      assert Results.finish(r) ==
               {:ok, %StopResult{stopped: [{1, :a, p1}, {2, :a, p2}, {3, :b, p3}], errors: []}}

      # after answers one by one, the pids alone are not matched to ids
      r = Results.record(Results.new(:stop, %{a: [1, 2]}), :a, [{1, {:ok, p1}}])
      assert Results.record(r, :a, {:stopped, [p2]}) == r
    end

    test "oks/1: the whole answers in the order they came, then those one by one" do
      [p1, p2, p3, p4] = for node <- [:a, :b, :b, :c], do: fake_pid(node)
      r = Results.new(:stop, %{a: [1], b: [2, 3], c: [4, 5]})
      r = Results.record(r, :c, [{4, {:ok, p4}}])
      r = Results.record(r, :b, {:stopped, [p2, p3]})
      r = Results.record(r, :a, {:stopped, [p1]})
      r = Results.record(r, :c, [{5, {:error, :not_found}}])
      assert Results.done?(r)
      assert Results.oks(r) == [{2, :b, p2}, {3, :b, p3}, {1, :a, p1}, {4, :c, p4}]

      assert {:error, %StopResult{stopped: stopped, errors: [{5, :c, :not_found}]}} =
               Results.finish(r)

      assert stopped == Results.oks(r)
      assert Results.oks(Results.new(:stop, %{a: [1]})) == []
    end

    test "a start answered with the pids alone ({:started, pids}), for a start only" do
      [p1, p2, p3] = for node <- [:a, :a, :b], do: fake_pid(node)
      r = Results.new(:start, %{a: [1, 2], b: [3]})
      # the other kind's tag is not this request's answer
      assert Results.record(r, :a, {:stopped, [p1, p2]}) == r
      assert Results.record(Results.new(:stop, %{a: [1]}), :a, {:started, [p1]}).count == 1
      r = Results.record(r, :a, {:started, [p1, p2]})
      refute Results.done?(r)
      assert Results.record(r, :b, {:started, [p3, p3]}) == r
      r = Results.record(r, :b, {:started, [p3]})
      assert Results.done?(r)

      assert Results.finish(r) ==
               {:ok, %StartResult{started: [{1, :a, p1}, {2, :a, p2}, {3, :b, p3}], errors: []}}
    end

    test "a stop with no errors lists every stopped copy in order" do
      r = Results.new(:stop, %{a: [1, 2], b: [3]})
      r = Results.record(r, :a, [{1, {:ok, :p1}}, {2, {:ok, :p2}}])
      r = Results.record(r, :b, [{3, {:ok, :p3}}])

      assert Results.finish(r) ==
               {:ok, %StopResult{stopped: [{1, :a, :p1}, {2, :a, :p2}, {3, :b, :p3}], errors: []}}
    end

    test "stops: any copy stopped wins; unknown children are reported once" do
      r = Results.new(:stop, %{a: [1, 2], b: [1, 2]})
      r = Results.record(r, :a, [{1, {:ok, :p1}}, {2, {:error, :not_found}}])
      r = Results.record(r, :b, [{1, {:error, :not_found}}, {2, {:error, :not_found}}])

      assert {:error, %StopResult{stopped: [{1, :a, :p1}], errors: [{2, :a, :not_found}]}} =
               Results.finish(r)
    end
  end

  describe "the start's lists in reverse" do
    test "normalize_all_rev/1 is normalize_all/1 reversed, with the ids; errors alike" do
      good = [
        %{id: "a", start: {HubWorker, :start_link, ["a"]}},
        {HubWorker, :b},
        %{id: "c", start: {HubWorker, :start_link, ["c"]}, restart: :temporary}
      ]

      {:ok, children} = Spec.normalize_all(good)
      {:ok, rev, ids_rev} = Spec.normalize_all_rev(good)
      assert rev == Enum.reverse(children)
      assert ids_rev == ["c", HubWorker, "a"]

      bad = [%{id: "x", start: :nope} | good] ++ [%{id: "y", start: {HubWorker}}]
      assert Spec.normalize_all_rev(bad) == Spec.normalize_all(bad)
      assert {:error, [{"x", _}, {"y", _}]} = Spec.normalize_all_rev(bad)
    end

    test "group_rev/4 groups as group/5 does, with each node's ids, in order" do
      ring = Ring.new([:a@h, :b@h, :c@h])
      children = for i <- 1..500, do: {"k#{i}", {HubWorker, :start_link, ["k#{i}"]}}
      slot = Registry.slot(nil, 42)
      groups = Placement.group(ring, 1, :active_active, children, slot)
      ids_rev = children |> Enum.map(&elem(&1, 0)) |> Enum.reverse()

      assert {^groups, expected} =
               Placement.group_rev(ring, Enum.reverse(children), ids_rev, slot)

      assert map_size(groups) == 3

      assert expected ==
               Map.new(groups, fn {node, es} -> {node, for({id, _, _, _} <- es, do: id)} end)

      assert Placement.group_rev(ring, [], [], slot) == {%{}, %{}}
    end
  end

  describe "the caller's order of sends" do
    test "the relay's request first, then the others" do
      alias Synod.Hub.Caller
      assert Caller.relay_first(%{a: 1, b: 2, c: 3}, :c) == [{:c, 3}, {:a, 1}, {:b, 2}]
      assert Caller.relay_first(%{a: 1, b: 2, c: 3}, :a) == [{:a, 1}, {:b, 2}, {:c, 3}]
      assert Caller.relay_first(%{a: 1, b: 2}, :z) == [{:a, 1}, {:b, 2}]
      assert Caller.relay_first(%{}, :z) == []
    end
  end

  describe "the tables' read_concurrency option" do
    test "off by default, on when asked; validated" do
      assert %{read_concurrency: false} = Options.hub!(name: :h)
      assert %{read_concurrency: true} = Options.hub!(name: :h, read_concurrency: true)

      assert_raise ArgumentError, ~r/invalid option read_concurrency/, fn ->
        Synod.child_spec(name: :h, read_concurrency: :yes)
      end

      for {name, rc} <- [{:hub_rc_off, false}, {:hub_rc_on, true}] do
        opts = if rc, do: [name: name, read_concurrency: true], else: [name: name]
        pid = start_supervised!({Synod, opts}, id: name)
        {registry, meta} = Synod.Hub.Caller.tables!(name)
        assert :ets.info(registry, :read_concurrency) == rc
        assert :ets.info(meta, :read_concurrency) == rc
        assert :ets.info(registry, :compressed)
        spec = %{id: "x", start: {HubWorker, :start_link, ["x"]}}
        assert {:ok, %StartResult{started: [{"x", _, _}]}} = Synod.start_child(name, spec)
        assert {:ok, %StopResult{stopped: [{"x", _, _}]}} = Synod.stop_child(name, "x")
        assert is_pid(pid)
      end
    end
  end

  describe "a hub on this node" do
    setup do
      start_supervised!({Synod, name: :hub_local})
      :ok
    end

    test "starts in a supervision tree; lookups; restarts update the registry" do
      assert Synod.members(:hub_local) == [node()]
      spec = %{id: {:user, 1}, start: {HubWorker, :start_link, [{:user, 1}]}}

      assert {:ok, %StartResult{started: [{{:user, 1}, _, pid}]}} =
               Synod.start_child(:hub_local, spec)

      assert Synod.whereis(:hub_local, {:user, 1}) == pid
      assert Synod.children(:hub_local, :local) == [{{:user, 1}, pid}]
      assert_raise ArgumentError, ~r/scope/, fn -> Synod.children(:hub_local, :everywhere) end

      :ok = Synod.subscribe(:hub_local, [:children_started])
      Process.exit(pid, :kill)
      assert_receive {:synod, :hub_local, :children_started, {_, [{{:user, 1}, new_pid}]}}
      assert new_pid != pid
      assert Synod.whereis(:hub_local, {:user, 1}) == new_pid
    end

    test "the children's supervisor: transient children, shutdown timeouts, supervisor calls" do
      # transient: a crash restarts it, a normal exit is final
      spec = %{id: "tr", start: {HubWorker, :start_link, ["tr"]}, restart: :transient}
      {:ok, %StartResult{started: [{_, _, pid}]}} = Synod.start_child(:hub_local, spec)
      Process.exit(pid, :kill)
      new = Wait.until(fn -> (p = Synod.whereis(:hub_local, "tr")) != pid && p end)
      assert Process.alive?(new)
      GenServer.stop(new)
      Wait.until(fn -> Synod.whereis(:hub_local, "tr") == nil end)

      # a child that ignores its shutdown is killed when its time is up
      stub = %{id: "stub", start: {HubWorker, :start_link, ["stub", :stubborn]}, shutdown: 50}
      {:ok, %StartResult{started: [{_, _, spid}]}} = Synod.start_child(:hub_local, stub)
      ref = Process.monitor(spid)
      sup = :"hub_local.children"
      assert [{:undefined, ^spid, :worker, [HubWorker]}] = DynamicSupervisor.which_children(sup)
      assert %{active: 1, workers: 1, supervisors: 0} = DynamicSupervisor.count_children(sup)

      assert {:ok, %StopResult{stopped: [{"stub", _, ^spid}]}} =
               Synod.stop_child(:hub_local, "stub")

      assert_received {:DOWN, ^ref, :process, ^spid, :killed}
      assert DynamicSupervisor.count_children(sup).active == 0
    end

    @tag :capture_log
    test "more restarts than max_restarts in max_seconds restart the hub on this node" do
      start_supervised!({Synod, name: :hub_fragile, max_restarts: 2, max_seconds: 60})
      coordinator = Process.whereis(:hub_fragile)
      spec = %{id: "f", start: {HubWorker, :start_link, ["f"]}}
      {:ok, %StartResult{started: [{_, _, pid}]}} = Synod.start_child(:hub_fragile, spec)

      # two restarts are allowed; the third exit shuts the node's hub down,
      # and its supervisor starts it again, empty
      Enum.reduce(1..2, pid, fn _, pid ->
        Process.exit(pid, :kill)
        Wait.until(fn -> (p = Synod.whereis(:hub_fragile, "f")) != pid && p end)
      end)
      |> Process.exit(:kill)

      Wait.until(fn ->
        new = Process.whereis(:hub_fragile)

        try do
          is_pid(new) and new != coordinator and Synod.children(:hub_fragile) == []
        rescue
          # between the old hub and the new one
          ArgumentError -> false
        end
      end)
    end

    test "a temporary child that exits leaves the registry" do
      spec = %{id: "tmp", start: {HubWorker, :start_link, ["tmp"]}, restart: :temporary}
      {:ok, %StartResult{started: [{_, _, pid}]}} = Synod.start_child(:hub_local, spec)
      :ok = Synod.subscribe(:hub_local, [:children_stopped])
      GenServer.stop(pid)
      assert_receive {:synod, :hub_local, :children_stopped, {_, [{"tmp", ^pid}]}}
      assert Synod.whereis(:hub_local, "tmp") == nil
    end

    test "dead subscribers and dead callers leave nothing behind" do
      coordinator = Process.whereis(:hub_local)
      {pid, ref} = spawn_monitor(fn -> :ok = Synod.subscribe(:hub_local) end)
      assert_receive {:DOWN, ^ref, _, _, _}
      _ = pid
      Wait.until(fn -> :sys.get_state(coordinator).subs == %{} end)

      # a caller that dies before its answers arrive
      {_, ref} =
        spawn_monitor(fn ->
          {:ok, _handle} =
            Synod.start_children(
              :hub_local,
              [%{id: "orphan", start: {HubWorker, :start_link, ["orphan"]}}],
              await: false
            )
        end)

      assert_receive {:DOWN, ^ref, _, _, _}
      state = :sys.get_state(coordinator)
      assert state.migrations == %{} and state.subs == %{}
      assert [{"orphan", _}] = Synod.children(:hub_local, :local)
      {:ok, _} = Synod.stop_child(:hub_local, "orphan")
      assert Synod.children(:hub_local, :local) == []
    end

    @tag :capture_log
    test "dispatch_event queues while paused and discards on request" do
      :ok = Synod.subscribe(:hub_local, [:note])
      assert {:ok, :event_dispatched} = Synod.Dispatcher.dispatch_event(:hub_local, :note, 1)
      assert_receive {:synod, :hub_local, :note, 1}
      # pause the queue as a redistribution does
      coordinator = Process.whereis(:hub_local)
      :sys.replace_state(coordinator, &%{&1 | migrations: %{make_ref() => %{ids: []}}})
      assert {:ok, :event_queued} = Synod.Dispatcher.dispatch_event(:hub_local, :note, 2)

      assert {:ok, :event_discarded} =
               Synod.Dispatcher.dispatch_event(:hub_local, :note, 3, discard: true)

      refute_received {:synod, :hub_local, :note, _}
      [ref] = Map.keys(:sys.get_state(coordinator).migrations)
      send(coordinator, {:synod_migration_timeout, ref})
      assert_receive {:synod, :hub_local, :note, 2}
      refute_received {:synod, :hub_local, :note, 3}

      assert_raise ArgumentError, ~r/^unknown option :drop/, fn ->
        Synod.Dispatcher.dispatch_event(:hub_local, :note, 4, drop: true)
      end
    end

    test "stop leaves no trace; an unknown hub is an error" do
      :ok = stop_supervised({Synod, :hub_local})
      assert {:error, {:unknown_hub, :hub_local}} = Synod.start_children(:hub_local, [])
      assert_raise ArgumentError, ~r/unknown hub :hub_local/, fn -> Synod.members(:hub_local) end
    end
  end
end
