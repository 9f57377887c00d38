defmodule Synod.HubReconcileUnitTest do
  # Synod.Hub.Reconcile driven directly (ra_server_SUITE style): a reconcile
  # of some rows on one node, as the effects the coordinator performs and
  # the count of children it moves. No coordinator, no peers.
  use ExUnit.Case, async: true

  alias Synod.Hub.{Placement, Reconcile}
  alias Synod.Ring
  import Synod.Test.HubCase, only: [fake_pid: 1]

  @spec_ok {Synod.Test.HubWorker, :start_link, ["x"]}

  setup do
    ring = Ring.new([:a, :b, :c])

    ctx = %{
      me: :a,
      ring: ring,
      rf: 1,
      model: :active_active,
      migration: :cold,
      migrating: MapSet.new()
    }

    # an id owned by each node
    owned = fn node ->
      Enum.find(1..1000, &(Placement.owners(ring, 1, "c#{&1}") == [node])) |> then(&"c#{&1}")
    end

    %{ctx: ctx, mine: owned.(:a), theirs: owned.(:b), third: owned.(:c)}
  end

  test "a row without a copy that this node owns starts here, as a member", c do
    row = {c.mine, @spec_ok, 3, []}

    assert Reconcile.rows(c.ctx, false, [row], nil) ==
             {1, [{:start_missing, [{c.mine, @spec_ok, 3, :active}]}]}

    # not ours: nothing
    assert Reconcile.rows(c.ctx, false, [{c.theirs, @spec_ok, 3, []}], nil) == {0, []}
  end

  test "a copy here of a child another node owns moves there by the strategy's plan", c do
    row = {c.theirs, @spec_ok, 3, [fake_pid(:a)]}

    assert Reconcile.rows(c.ctx, false, [row], nil) ==
             {1, [{:migrate, :b, :stop_then_start, [{c.theirs, @spec_ok, 3, :active}]}]}

    hot = %{c.ctx | migration: :hot}

    assert {1, [{:migrate, :b, :start_then_handover, _}]} = Reconcile.rows(hot, false, [row], nil)
  end

  test "a surplus copy here, its owner running one too, is stopped", c do
    row = {c.theirs, @spec_ok, 3, [fake_pid(:a), fake_pid(:b)]}
    assert Reconcile.rows(c.ctx, false, [row], nil) == {1, [{:stop_surplus, [c.theirs]}]}
  end

  test "stops come before starts, starts before moves", c do
    rows = [
      {c.third, @spec_ok, 1, [fake_pid(:a)]},
      {c.mine, @spec_ok, 2, []},
      {c.theirs, @spec_ok, 3, [fake_pid(:a), fake_pid(:b)]}
    ]

    assert {3, effects} = Reconcile.rows(c.ctx, false, rows, nil)
    kinds = Enum.map(effects, &elem(&1, 0))
    assert kinds == [:stop_surplus, :start_missing, :migrate]
  end

  test "a partitioned side and children being hot-swapped change nothing", c do
    row = {c.mine, @spec_ok, 3, []}
    assert Reconcile.rows(c.ctx, true, [row], nil) == {0, []}
    swapping = %{c.ctx | migrating: MapSet.new([c.mine])}
    assert Reconcile.rows(swapping, false, [row], nil) == {0, []}
  end

  test "with a new ring a local copy whose mode changed is told so (active_passive)", c do
    ctx = %{c.ctx | rf: 2, model: :active_passive}
    old = Ring.new([:a, :b, :c, :d])

    # a child with copies on both its owners under the new ring, whose
    # mode on :a differs from the old ring's
    id =
      Enum.find_value(1..2000, fn i ->
        id = "m#{i}"

        with [_, _] = owners <- Placement.owners(c.ctx.ring, 2, id),
             true <- :a in owners,
             mode when mode != nil <-
               Placement.mode_change(:a, :active_passive, 2, old, c.ctx.ring, id) do
          {id, owners, mode}
        else
          _ -> nil
        end
      end)

    {id, owners, mode} = id
    here = fake_pid(:a)
    pids = for n <- owners, do: if(n == :a, do: here, else: fake_pid(n))
    row = {id, @spec_ok, 1, pids}

    assert Reconcile.rows(ctx, false, [row], old) == {0, [{:tell_mode, here, mode}]}
    # without an old ring (no membership change), no mode is told
    assert Reconcile.rows(ctx, false, [row], nil) == {0, []}
  end
end
