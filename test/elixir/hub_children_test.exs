defmodule Synod.HubChildrenTest do
  # The children's supervisor (Synod.Hub.Children) on its own, this test
  # process standing in for the coordinator (registered under the hub's
  # name): a batch stop waits for every child's end through its link, and
  # also ends for a child that unlinked itself (no EXIT ever comes).
  use ExUnit.Case, async: false

  alias Synod.Hub.Children

  defmodule Child do
    @moduledoc false
    # `start/1`: a process linked to its caller (the supervisor) that, on
    # `{:unlink, from}`, unlinks from it and acknowledges; `:trap` makes it
    # trap exits and finish only after `ms` on a shutdown.
    def start(mode) do
      parent = self()
      {:ok, spawn_link(fn -> init(parent, mode) end)}
    end

    defp init(parent, {:trap, ms}) do
      Process.flag(:trap_exit, true)
      loop(parent, ms)
    end

    defp init(parent, _mode), do: loop(parent, nil)

    defp loop(parent, ms) do
      receive do
        {:unlink, from} ->
          Process.unlink(parent)
          send(from, {:unlinked, self()})
          loop(parent, ms)

        {:EXIT, _, :shutdown} when is_integer(ms) ->
          Process.sleep(ms)
      end
    end
  end

  setup do
    hub = :"children_test_#{System.unique_integer([:positive])}"
    Process.register(self(), hub)
    cfg = %{name: hub, max_restarts: 1_000, max_seconds: 5}
    {:ok, sup} = Children.start_link(cfg)
    {_token, nil, []} = Children.attach(sup)
    %{sup: sup}
  end

  defp spec(mode), do: {Child, :start, [mode]}

  test "a stop batch answers in order and every child it found is gone", %{sup: sup} do
    children = for i <- 1..200, do: {"c#{i}", spec(:plain)}
    started = Children.start_batch(sup, children)
    pids = for {_, {:ok, pid}} <- started, do: pid
    assert length(pids) == 200
    refs = Enum.map(pids, &Process.monitor/1)

    ids = ["c5", "missing", "c1" | for(i <- 2..200, i != 5, do: "c#{i}")]
    answers = Children.stop_batch(sup, ids)
    assert Enum.map(answers, &elem(&1, 0)) == ids
    assert {"missing", {:error, :not_found}} in answers
    assert {"c1", {:ok, hd(pids)}} in answers

    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, _}, 1_000)
    # no exit of a stopped child reaches the coordinator as a crash
    refute_receive {:synod_child_exit, _, _, _, _, _}, 100
    assert DynamicSupervisor.count_children(sup).active == 0
  end

  test "after stops of a few and of most, the child left is still supervised", %{sup: sup} do
    children = for i <- 1..40, do: {"c#{i}", spec(:plain)}
    started = Map.new(Children.start_batch(sup, children), fn {id, {:ok, pid}} -> {id, pid} end)
    answers = fn ids -> for id <- ids, do: {id, {:ok, started[id]}} end

    # a few of many (taken out one by one), then most of the rest (the
    # rest rebuilt without them)
    few = ["c1", "c2", "c3"]
    assert Children.stop_batch(sup, few) == answers.(few)
    assert DynamicSupervisor.count_children(sup).active == 37
    most = for i <- 5..40, do: "c#{i}"
    assert Children.stop_batch(sup, most) == answers.(most)
    assert [{:undefined, c4, _, _}] = DynamicSupervisor.which_children(sup)
    assert c4 == started["c4"]

    # the one left crashes: seen as its own and restarted (:permanent)
    Process.exit(c4, :crash)
    assert_receive {:synod_child_exit, _, "c4", ^c4, :crash, new} when is_pid(new)

    assert Children.stop_batch(sup, ["c4", "c1"]) ==
             [{"c4", {:ok, new}}, {"c1", {:error, :not_found}}]

    assert DynamicSupervisor.count_children(sup).active == 0
  end

  test "stop_ids/2 stops as stop_batch/2 does, answering how many it stopped", %{sup: sup} do
    children = for i <- 1..60, do: {"c#{i}", spec(:plain)}
    started = Map.new(Children.start_batch(sup, children), fn {id, {:ok, pid}} -> {id, pid} end)
    refs = Map.new(started, fn {id, pid} -> {id, Process.monitor(pid)} end)

    # some of them (the rest kept and supervised), an id twice (stopped
    # once), one missing
    some = ["c3", "missing", "c1", "c3" | for(i <- 10..20, do: "c#{i}")]
    assert Children.stop_ids(sup, some) == 13

    for id <- Enum.uniq(some) -- ["missing"] do
      ref = refs[id]
      assert_receive {:DOWN, ^ref, :process, _, _}, 1_000
    end

    assert DynamicSupervisor.count_children(sup).active == 60 - 13
    assert Children.stop_ids(sup, []) == 0

    # every child left (both maps emptied at once): none is left supervised
    left = for {id, _} <- started, id not in some, do: id
    assert Children.stop_ids(sup, left) == 47

    for id <- left do
      ref = refs[id]
      assert_receive {:DOWN, ^ref, :process, _, _}, 1_000
    end

    assert DynamicSupervisor.count_children(sup).active == 0
    assert DynamicSupervisor.which_children(sup) == []
    refute_receive {:synod_child_exit, _, _, _, _, _}, 100

    # and it supervises new children afterwards
    [{"n", {:ok, n}}] = Children.start_batch(sup, [{"n", spec(:plain)}])
    Process.exit(n, :crash)
    assert_receive {:synod_child_exit, _, "n", ^n, :crash, new} when is_pid(new)
  end

  test "big start batches (put in the maps at once) and small ones answer alike", %{sup: sup} do
    # a small batch first (one by one), then a big one that repeats two of
    # its ids and has one start that fails (at once), then a big one with
    # an id twice (one by one: the second answered with the first's pid)
    small = Children.start_batch(sup, for(i <- 1..2, do: {"c#{i}", spec(:plain)}))
    [{"c1", {:ok, c1}}, {"c2", {:ok, _}}] = small
    bad = {Kernel, :apply, [fn -> {:error, :nope} end, []]}
    big = [{"c1", spec(:plain)}, {"bad", bad} | for(i <- 3..100, do: {"c#{i}", spec(:plain)})]
    answers = Children.start_batch(sup, big)
    assert Enum.map(answers, &elem(&1, 0)) == Enum.map(big, &elem(&1, 0))
    assert [{"c1", {:ok, ^c1}}, {"bad", {:error, :nope}} | rest] = answers
    assert Enum.all?(rest, &match?({_, {:ok, pid}} when is_pid(pid), &1))
    assert DynamicSupervisor.count_children(sup).active == 100

    twice = for i <- 101..200, do: {"c#{i}", spec(:plain)}
    answers = Children.start_batch(sup, twice ++ [{"c150", spec(:plain)}])
    assert List.last(answers) == {"c150", {:ok, :proplists.get_value("c150", answers) |> elem(1)}}
    assert DynamicSupervisor.count_children(sup).active == 200

    # every one of them is supervised: its exit is seen and it is restarted
    {"c50", {:ok, c50}} = List.keyfind(rest, "c50", 0)
    Process.exit(c50, :crash)
    assert_receive {:synod_child_exit, _, "c50", ^c50, :crash, new} when is_pid(new)
    ids = ["c1", "c50", "bad" | for(i <- 101..200, do: "c#{i}")]

    assert [{"c1", {:ok, ^c1}}, {"c50", {:ok, ^new}}, {"bad", {:error, :not_found}} | _] =
             Children.stop_batch(sup, ids)

    assert DynamicSupervisor.count_children(sup).active == 98
  end

  test "a child that unlinked itself from the supervisor is stopped all the same", %{sup: sup} do
    [{"u", {:ok, pid}}, {"p", {:ok, other}}] =
      Children.start_batch(sup, [{"u", spec(:plain)}, {"p", spec(:plain)}])

    send(pid, {:unlink, self()})
    assert_receive {:unlinked, ^pid}
    ref = Process.monitor(pid)

    # (with only its link to wait on, this call would never return)
    assert Children.stop_batch(sup, ["u", "p"]) == [{"u", {:ok, pid}}, {"p", {:ok, other}}]
    assert_receive {:DOWN, ^ref, :process, _, :shutdown}
    refute Process.alive?(other)
  end

  test "a child that traps exits gets its shutdown time, then is killed", %{sup: sup} do
    # the stored spec with a 100 ms shutdown: one child finishes in 10 ms,
    # the other would take 10 s and is killed at its deadline
    quick = %{start: {Child, :start, [{:trap, 10}]}, shutdown: 100}
    slow = %{start: {Child, :start, [{:trap, 10_000}]}, shutdown: 100}
    [{"q", {:ok, q}}, {"s", {:ok, s}}] = Children.start_batch(sup, [{"q", quick}, {"s", slow}])
    refs = for pid <- [q, s], do: {pid, Process.monitor(pid)}

    assert Children.stop_batch(sup, ["q", "s"]) == [{"q", {:ok, q}}, {"s", {:ok, s}}]
    {_, rq} = List.keyfind(refs, q, 0)
    {_, rs} = List.keyfind(refs, s, 0)
    assert_receive {:DOWN, ^rq, :process, _, :normal}
    assert_receive {:DOWN, ^rs, :process, _, :killed}
  end
end
