defmodule Synod.Proper.StoreModel do
  @moduledoc false
  # A PropEr stateful model (proper_statem) of Synod.Store: puts (with and
  # without a lease), deletes, prefix ranges, transactions comparing every
  # target (a count over the case's keys among them), takes of the first key
  # (a txn deleting with `first: true`), lease grant and revoke with their
  # keys, compaction and watches, against a real store on real peers.
  #
  # The model is the store's rules (docs/store.md) in a map: each key's value,
  # create and mod revisions, version and lease; one store-wide revision
  # bumped by every command that changes a key; the history of events. It
  # counts revisions from 0: each property case runs under a fresh key prefix
  # and the store's revision when the case began (its base) is added on the
  # way in and taken off on the way out (see ctx/0), so cases share one
  # store.
  #
  # Commands run on a member's node over :erpc (the calls a client on that
  # node makes), except watches, which run here: their events come to the
  # caller.

  alias Synod.Store
  alias Synod.Store.Command

  @keys ["a", "b", "c", "d"]
  @values ["x", "y", "z"]
  @ops [:==, :!=, :<, :>]

  # ---- the case's context ----

  @doc "Starts a case: a fresh prefix, and the store's revision now as its base."
  def begin_case(store, nodes) do
    {:ok, base} = :erpc.call(hd(nodes), Store, :revision, [store])
    prefix = "proper/#{System.unique_integer([:positive])}/"
    :persistent_term.put(__MODULE__, %{store: store, nodes: nodes, prefix: prefix, base: base})
  end

  defp ctx, do: :persistent_term.get(__MODULE__)

  defp on_member(fun, args) do
    c = ctx()
    :erpc.call(Enum.random(c.nodes), Store, fun, [c.store | args], 10_000)
  end

  defp rel(0), do: 0
  defp rel(rev), do: rev - ctx().base
  defp absolute(0), do: 0
  defp absolute(delta), do: ctx().base + delta
  defp key(k), do: ctx().prefix <> k

  defp unkey(k),
    do: binary_part(k, byte_size(ctx().prefix), byte_size(k) - byte_size(ctx().prefix))

  defp kv(nil), do: nil

  defp kv(kv),
    do: {kv.value, rel(kv.create_revision), rel(kv.mod_revision), kv.version, kv.lease}

  # ---- the commands, as a client sees them ----

  def put(k, v), do: put_result(on_member(:put, [key(k), v]))
  def put_lease(k, v, lease), do: put_result(on_member(:put, [key(k), v, [lease: lease]]))

  defp put_result({:ok, rev, nil}), do: {:ok, rel(rev)}
  defp put_result(other), do: other

  def get(k) do
    {:ok, kv} = on_member(:get, [key(k)])
    kv(kv)
  end

  def delete(k) do
    {:ok, _rev, n, _} = on_member(:delete, [key(k)])
    n
  end

  def range do
    {:ok, kvs, count, false} = on_member(:range, [ctx().prefix, [prefix: true]])
    {count, for(kv <- kvs, do: {unkey(kv.key), kv(kv)})}
  end

  def txn(compare, k, v_then, v_else) do
    compare =
      case compare do
        {:exists, ck} ->
          {:exists, key(ck)}

        {:absent, ck} ->
          {:absent, key(ck)}

        {:count, op, n} ->
          {:count, ctx().prefix, [prefix: true], op, n}

        {t, ck, op, n} when t in [:create_revision, :mod_revision] ->
          {t, key(ck), op, absolute(n)}

        {t, ck, op, x} ->
          {t, key(ck), op, x}
      end

    case on_member(:txn, [[compare], [{:put, key(k), v_then}], [{:put, key(k), v_else}]]) do
      {:ok, rev, ok?, _} -> {ok?, rel(rev)}
      other -> other
    end
  end

  # The first key of the case (key order) deleted and returned, in one txn.
  def take_first do
    take = {:delete, ctx().prefix, prefix: true, first: true, prev_kv: true}

    case on_member(:txn, [[], [take], []]) do
      {:ok, rev, true, [{:delete, 1, [kv]}]} -> {unkey(kv.key), kv(kv), rel(rev)}
      {:ok, rev, true, [{:delete, 0, []}]} -> {nil, rel(rev)}
      other -> other
    end
  end

  def grant do
    {:ok, id, _ttl} = on_member(:grant, [600_000])
    id
  end

  def revoke(lease) do
    {:ok, rev} = on_member(:revoke, [lease])
    rel(rev)
  end

  def compact(delta) do
    c = ctx()

    case :erpc.call(hd(c.nodes), Synod.Raft, :command, [c.store, Command.compact(absolute(delta))]) do
      {:ok, {:ok, _rev, {:compacted, r}}} -> {:compacted, rel(r)}
      other -> other
    end
  end

  @doc "Every event of the prefix from revision `from` (relative) up to `upto`, in order."
  def watch(from, upto) do
    c = ctx()
    {:ok, ref} = Store.watch(c.store, c.prefix, prefix: true, from: absolute(from))
    events = collect(ref, upto, [])
    Store.unwatch(c.store, ref)
    events
  end

  defp collect(ref, upto, acc) do
    receive do
      {:synod_watch, ^ref, {:error, _} = e} ->
        Enum.reverse([e | acc])

      {:synod_watch, ^ref, events} ->
        acc =
          Enum.reduce(events, acc, fn {type, rev, kv, _prev}, acc ->
            value = if type == :put, do: kv.value
            [{type, rel(rev), unkey(kv.key), value} | acc]
          end)

        if match?([{_, rev, _, _} | _] when rev >= upto, acc),
          do: Enum.reverse(acc),
          else: collect(ref, upto, acc)
    after
      10_000 -> Enum.reverse([:watch_timed_out | acc])
    end
  end

  # ---- proper_statem ----

  def initial_state, do: initial_state(false)

  def initial_state(parallel?),
    do: %{kv: %{}, rev: 0, leases: [], compacted: 0, events: [], parallel: parallel?}

  def command(s) do
    k = :proper_types.elements(@keys)
    v = :proper_types.elements(@values)

    always = [
      {5, {:call, __MODULE__, :put, [k, v]}},
      {4, {:call, __MODULE__, :get, [k]}},
      {2, {:call, __MODULE__, :delete, [k]}},
      {2, {:call, __MODULE__, :range, []}},
      {4, {:call, __MODULE__, :txn, [compare(s), k, v, v]}},
      {2, {:call, __MODULE__, :take_first, []}},
      {1, {:call, __MODULE__, :grant, []}}
    ]

    with_leases =
      if s.leases == [],
        do: [],
        else: [
          {3, {:call, __MODULE__, :put_lease, [k, v, :proper_types.elements(s.leases)]}},
          {1, {:call, __MODULE__, :revoke, [:proper_types.elements(s.leases)]}}
        ]

    # watches and compaction read or cut the whole history: sequential runs only
    history =
      if s.parallel or s.rev <= s.compacted,
        do: [],
        else: [
          {1, {:call, __MODULE__, :watch, [s.compacted + 1, s.rev]}},
          {1, {:call, __MODULE__, :compact, [:proper_types.integer(s.compacted + 1, s.rev)]}}
        ]

    :proper_types.frequency(always ++ with_leases ++ history)
  end

  defp compare(s) do
    k = :proper_types.elements(@keys)
    op = :proper_types.elements(@ops)

    :proper_types.oneof([
      {:exists, k},
      {:absent, k},
      {:count, op, :proper_types.integer(0, length(@keys))},
      {:version, k, op, :proper_types.integer(0, 3)},
      {:create_revision, k, op, :proper_types.integer(0, max(s.rev, 0))},
      {:mod_revision, k, op, :proper_types.integer(0, max(s.rev, 0))},
      {:value, k, op, :proper_types.elements(@values)},
      {:lease, k, op, :proper_types.elements([0 | s.leases])}
    ])
  end

  def precondition(s, {:call, _, :put_lease, [_, _, lease]}), do: lease in s.leases
  def precondition(s, {:call, _, :revoke, [lease]}), do: lease in s.leases
  def precondition(s, {:call, _, :watch, [from, upto]}), do: from > s.compacted and upto == s.rev
  def precondition(s, {:call, _, :compact, [r]}), do: r > s.compacted and r <= s.rev
  def precondition(_s, _call), do: true

  def next_state(s, _res, {:call, _, :put, [k, v]}), do: write(s, k, v, 0)
  def next_state(s, _res, {:call, _, :put_lease, [k, v, lease]}), do: write(s, k, v, lease)

  def next_state(s, _res, {:call, _, :delete, [k]}) do
    if Map.has_key?(s.kv, k), do: remove(bump(s), [k]), else: s
  end

  def next_state(s, _res, {:call, _, :txn, [compare, k, v_then, v_else]}),
    do: write(s, k, if(holds?(s, compare), do: v_then, else: v_else), 0)

  def next_state(s, _res, {:call, _, :take_first, []}) do
    case Enum.sort(Map.keys(s.kv)) do
      [k | _] -> remove(bump(s), [k])
      [] -> s
    end
  end

  def next_state(s, id, {:call, _, :grant, []}), do: %{s | leases: s.leases ++ [id]}

  def next_state(s, _res, {:call, _, :revoke, [lease]}) do
    s = %{s | leases: List.delete(s.leases, lease)}
    attached = for {k, {_, _, _, _, ^lease}} <- s.kv, do: k

    if attached == [], do: s, else: remove(bump(s), Enum.sort(attached))
  end

  def next_state(s, _res, {:call, _, :compact, [r]}), do: %{s | compacted: r}
  def next_state(s, _res, _call), do: s

  defp bump(s), do: %{s | rev: s.rev + 1}

  defp write(s, k, v, lease) do
    s = bump(s)

    entry =
      case s.kv do
        %{^k => {_, create, _, version, _}} -> {v, create, s.rev, version + 1, lease}
        _ -> {v, s.rev, s.rev, 1, lease}
      end

    %{s | kv: Map.put(s.kv, k, entry), events: [{:put, s.rev, k, v} | s.events]}
  end

  defp remove(s, keys) do
    events = for k <- keys, do: {:delete, s.rev, k, nil}
    %{s | kv: Map.drop(s.kv, keys), events: Enum.reverse(events) ++ s.events}
  end

  # An absent key has 0 for each number and fails every value compare.
  defp holds?(s, {:exists, k}), do: Map.has_key?(s.kv, k)
  defp holds?(s, {:absent, k}), do: not Map.has_key?(s.kv, k)
  defp holds?(s, {:count, op, n}), do: cmp(map_size(s.kv), op, n)

  defp holds?(s, {:value, k, op, x}) do
    case s.kv do
      %{^k => {v, _, _, _, _}} -> cmp(v, op, x)
      _ -> false
    end
  end

  defp holds?(s, {target, k, op, x}) do
    {_, create, mod, version, lease} = Map.get(s.kv, k, {nil, 0, 0, 0, 0})
    n = %{create_revision: create, mod_revision: mod, version: version, lease: lease}[target]
    cmp(n, op, x)
  end

  defp cmp(a, :==, b), do: a == b
  defp cmp(a, :!=, b), do: a != b
  defp cmp(a, :<, b), do: a < b
  defp cmp(a, :>, b), do: a > b

  def postcondition(s, {:call, _, :put, _}, res), do: res == {:ok, s.rev + 1}
  def postcondition(s, {:call, _, :put_lease, _}, res), do: res == {:ok, s.rev + 1}
  def postcondition(s, {:call, _, :get, [k]}, res), do: res == Map.get(s.kv, k)

  def postcondition(s, {:call, _, :delete, [k]}, n),
    do: n == if(Map.has_key?(s.kv, k), do: 1, else: 0)

  def postcondition(s, {:call, _, :range, []}, res),
    do: res == {map_size(s.kv), Enum.sort(s.kv)}

  def postcondition(s, {:call, _, :txn, [compare | _]}, res),
    do: res == {holds?(s, compare), s.rev + 1}

  def postcondition(s, {:call, _, :take_first, []}, res) do
    case Enum.sort(s.kv) do
      [{k, entry} | _] -> res == {k, entry, s.rev + 1}
      [] -> res == {nil, s.rev}
    end
  end

  def postcondition(s, {:call, _, :grant, []}, id), do: is_integer(id) and id not in s.leases

  def postcondition(s, {:call, _, :revoke, [lease]}, rev) do
    attached? = Enum.any?(s.kv, &match?({_, {_, _, _, _, ^lease}}, &1))
    rev == if(attached?, do: s.rev + 1, else: s.rev)
  end

  def postcondition(_s, {:call, _, :compact, [r]}, res), do: res == {:compacted, r}

  def postcondition(s, {:call, _, :watch, [from, _]}, events),
    do: events == s.events |> Enum.reverse() |> Enum.filter(&(elem(&1, 1) >= from))

  # ---- properties ----

  @doc "The sequential property: every command's answer is the model's."
  def prop_sequential(store, nodes) do
    :proper.forall(:proper_statem.commands(__MODULE__), fn cmds ->
      begin_case(store, nodes)
      {history, state, result} = :proper_statem.run_commands(__MODULE__, cmds)

      :proper.whenfail(
        fn ->
          IO.inspect({cmds, history, state, result}, label: "counterexample", limit: :infinity)
        end,
        fn -> result == :ok end
      )
    end)
  end

  @doc "The parallel property: concurrent answers fit some sequential order of the model."
  def prop_parallel(store, nodes) do
    :proper.forall(:proper_statem.parallel_commands(__MODULE__, initial_state(true)), fn cmds ->
      begin_case(store, nodes)
      {seq, par, result} = :proper_statem.run_parallel_commands(__MODULE__, cmds)

      :proper.whenfail(
        fn -> IO.inspect({cmds, seq, par, result}, label: "counterexample", limit: :infinity) end,
        fn -> result == :ok end
      )
    end)
  end
end
