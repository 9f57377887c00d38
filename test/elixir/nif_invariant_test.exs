defmodule Synod.NifInvariantTest do
  # A failed invariant inside the NIF stops one instance, not the VM
  # (c_src/synod_nif_guard.c). The test-only trigger SYNOD_TEST_INVARIANT
  # makes one peer's 40th store_apply fail an invariant inside the guard, as
  # an assert in the store core would: that member's call raises
  # {:invariant, where}, the member crashes and its supervisor starts it
  # again from its files; the VM, its other processes and the other members
  # go on, and the restarted member catches up.
  use ExUnit.Case, async: false

  alias Synod.Store
  alias Synod.Test.Cluster

  @moduletag :distributed

  test "an invariant failure in one member's core leaves the VM and the group running" do
    dir = Path.join(System.tmp_dir!(), "synod_invariant_#{System.unique_integer([:positive])}")
    env = fn i -> if i == 3, do: [{"SYNOD_TEST_INVARIANT", "store_apply:40"}], else: [] end
    c = Cluster.start(3, data_root: dir, prefix: "invariant", store: :invariant, env: env)
    on_exit(fn -> Cluster.stop(c) && File.rm_rf!(dir) end)
    victim = List.last(c.nodes)
    os_pid = c.os_pids[victim]
    bystander = :erpc.call(victim, Agent, :start, [Function, :identity, [:alive]])
    member = fn -> :erpc.call(victim, Process, :whereis, [:"Synod.Raft.Member.invariant"]) end
    first = member.()

    for i <- 1..100 do
      assert {:ok, _, nil} = :erpc.call(hd(c.nodes), Store, :put, [:invariant, "k#{i}", "v"])
    end

    # the VM is the same OS process, its other processes live, and the member
    # was started again with a new instance
    assert :erpc.call(victim, :os, :getpid, []) == os_pid
    assert {:ok, pid} = bystander
    assert :erpc.call(victim, Process, :alive?, [pid])
    Synod.Test.Wait.until(fn -> member.() not in [nil, first] end, 15_000)

    # it caught up from disk and the leader: every member applied the same
    Synod.Test.Wait.until(
      fn ->
        applied = for n <- c.nodes, do: :erpc.call(n, Synod.Raft, :status, [:invariant]).applied
        length(Enum.uniq(applied)) == 1
      end,
      15_000
    )

    assert {:ok, %{value: "v"}} =
             :erpc.call(victim, Store, :get, [:invariant, "k100", [consistency: :stale]])
  end
end
