defmodule Synod.Fault.Watches do
  @moduledoc false
  # Workload: clients put unique values under a prefix; two watchers on the
  # controller (never killed, so they run to the end) watch the prefix from
  # the revision before the first put, and watch again from the revision
  # after the last event they got whenever the process serving their watch
  # goes away (its node was killed or cut off); a third starts from that same
  # revision halfway through the run, thousands of events behind. Checked,
  # for each watcher:
  # every put acknowledged with {:ok, revision} arrived, with its key and
  # value, exactly once, in revision order, and nothing arrived that no put
  # could have written.
  #
  # What it cannot see: events of puts whose outcome is unknown are allowed
  # but not required; a watcher that ends on {:compacted, _} reports it as
  # the violation.

  alias Synod.Fault.{Collector, Register}
  alias Synod.Store

  @prefix "watch/"
  @call_timeout 2_000
  @watchers 2

  def setup(cluster, opts) do
    {:ok, rev} = :erpc.call(hd(cluster.nodes), Store, :revision, [cluster.store])

    watchers = for _ <- 1..@watchers, do: spawn(fn -> watch(cluster.store, rev + 1, [], 0) end)

    # one more starts halfway through, from the same revision: far behind
    late_ms = div(Keyword.get(opts, :time, 12_000), 2)

    late =
      spawn(fn ->
        Process.sleep(late_ms)
        watch(cluster.store, rev + 1, [], 0)
      end)

    %{watchers: watchers ++ [late], from: rev + 1}
  end

  def init_client(_ctx, _process), do: 0

  def stop_client(_ctx, _store, _collector, _process, _n), do: :ok

  def op(_ctx, store, collector, process, n) do
    key = @prefix <> Integer.to_string(:rand.uniform(5))
    v = "#{inspect(process)}.#{n}"

    Collector.run(collector, process, :put, {key, v}, fn ->
      case Store.put(store, key, v, timeout: @call_timeout) do
        {:ok, rev, nil} -> {:ok, rev}
        other -> {:info, other}
      end
    end)

    n + 1
  end

  # ---- the watchers (on the controller) ----

  defp watch(store, from, events, resumes) do
    case Store.watch(store, @prefix, prefix: true, from: from) do
      {:ok, ref} ->
        receive_events(store, ref, from, events, resumes)

      {:error, _} ->
        Process.sleep(100)
        watch(store, from, events, resumes)
    end
  end

  defp receive_events(store, ref, from, events, resumes) do
    receive do
      {:synod_watch, ^ref, {:error, reason}} ->
        hold(%{events: Enum.reverse(events), resumes: resumes, ended: reason})

      {:synod_watch, ^ref, batch} ->
        events =
          Enum.reduce(batch, events, fn {_type, rev, kv, _}, acc ->
            [{rev, kv.key, kv.value} | acc]
          end)

        from =
          case events do
            [{rev, _, _} | _] -> rev + 1
            [] -> from
          end

        receive_events(store, ref, from, events, resumes)

      {:DOWN, ^ref, _, _, _} ->
        watch(store, from, events, resumes + 1)

      {:report, pid} ->
        send(
          pid,
          {:watched, self(), %{events: Enum.reverse(events), resumes: resumes, ended: nil}}
        )

        receive_events(store, ref, from, events, resumes)
    end
  end

  defp hold(report) do
    receive do
      {:report, pid} ->
        send(pid, {:watched, self(), report})
        hold(report)
    end
  end

  defp report(w) do
    send(w, {:report, self()})

    receive do
      {:watched, ^w, r} -> r
    after
      10_000 -> %{events: [], resumes: 0, ended: :no_report}
    end
  end

  # Waits (bounded) until every watcher has seen the last acknowledged put,
  # then records what each one got.
  def final(_cluster, ctx, collector) do
    {ops, _} = Collector.history(collector)
    last = ops |> Enum.filter(&(&1.type == :ok)) |> Enum.map(& &1.value) |> Enum.max(fn -> 0 end)
    deadline = System.monotonic_time(:millisecond) + 30_000

    for {w, i} <- Enum.with_index(ctx.watchers, 1) do
      r = wait_report(w, last, deadline)
      Collector.note(collector, {:watcher, i}, {:watched, r})
      Process.exit(w, :kill)
    end

    :ok
  end

  defp wait_report(w, last, deadline) do
    r = report(w)

    caught_up = match?([_ | _], r.events) and elem(List.last(r.events), 0) >= last

    if caught_up or r.ended != nil or System.monotonic_time(:millisecond) > deadline do
      r
    else
      Process.sleep(200)
      wait_report(w, last, deadline)
    end
  end

  def check(ops, events, _ctx) do
    acked = Map.new(for %{f: :put, type: :ok, arg: {k, v}, value: rev} <- ops, do: {rev, {k, v}})
    written = MapSet.new(for %{f: :put, arg: kv} <- ops, do: kv)
    reports = for {_t, {:watcher, i}, {:watched, r}} <- events, do: {i, r}
    counts = Register.count(ops) |> Map.put(:watchers, length(reports))

    counts =
      Map.put(counts, :resumes, reports |> Enum.map(fn {_, r} -> r.resumes end) |> Enum.sum())

    case Enum.find_value(reports, fn {i, r} -> watcher_violation(i, r, acked, written) end) do
      nil -> {:ok, counts}
      v -> {:error, counts, v}
    end
  end

  defp watcher_violation(i, r, acked, written) do
    revs = Enum.map(r.events, &elem(&1, 0))
    got = Map.new(r.events, fn {rev, k, v} -> {rev, {k, v}} end)

    cond do
      r.ended != nil ->
        %{watcher: i, ended: r.ended, events: length(r.events)}

      revs != Enum.sort(Enum.uniq(revs)) ->
        %{watcher: i, out_of_order_or_twice: first_disorder(revs)}

      (missing = Enum.find(Enum.sort(Map.keys(acked)), &(Map.get(got, &1) != acked[&1]))) != nil ->
        %{
          watcher: i,
          missing_acked_put: {missing, acked[missing]},
          got: Map.get(got, missing),
          events: length(revs),
          last: List.last(revs)
        }

      (phantom = Enum.find(r.events, fn {_, k, v} -> not MapSet.member?(written, {k, v}) end)) !=
          nil ->
        %{watcher: i, phantom: phantom}

      true ->
        nil
    end
  end

  defp first_disorder(revs) do
    revs |> Enum.chunk_every(2, 1, :discard) |> Enum.find(fn [a, b] -> a >= b end)
  end
end
