# What bounds 64 synchronous clients (issue 18, branch raft64): the rounds
# of the leader's member, counted and traced. 3 voters on real :peer nodes
# (fsync on, the KV machine), CLIENTS (default 64) synchronous clients on a
# follower's node, as in bench/raft_bench.exs.
#
#   MIX_ENV=test mix run bench/raft_rounds.exs [COMMANDS] [CLIENTS] [ROUNDS]
#
# Each round runs both shapes, alternating, each on a fresh group:
# `fsync_writer: false` (the member fdatasyncs in its own process, the
# default) and `fsync_writer: true` (Synod.Raft.Syncer fdatasyncs beside
# the member, which keeps stepping). Per shape:
#
# 1. Counts (call tracing, `[:call_count]`, on each member's VM, over
#    COMMANDS commands, default 20,000): per second and per command,
#    `raft_propose/2` (proposals), `raft_ready/1` (Readies asked for,
#    the empty one ending each drain included), `:file.datasync/1`
#    (fsyncs of the whole VM: the member's or its syncer's) and
#    `raft_step/2` (messages stepped); commands per leader fsync. The
#    rate of this pass is printed too (wall clock, noisy). In the same
#    pass: CPU us per command of each VM (`:erlang.statistics(:runtime)`,
#    every thread, busy wait included; the clients run on the second
#    VM), and each member sampled every millisecond (`Process.info/2`):
#    waiting with an empty mailbox, inside fdatasync, or anything else
#    (running, runnable, or waiting with messages queued), and its mean
#    mailbox length.
# 2. Phases of the leader's rounds, from a trace of the leader's member
#    (and its syncer) over COMMANDS / 4 more commands (`:erlang.trace/3`,
#    `[:send, :receive, :call, :return_to, :monotonic_timestamp]`, a tracer
#    on the leader's VM): per command, received (in the mailbox) ->
#    proposed (taken) -> the fsync that covers it starts -> that fsync
#    returns -> the reply sent; medians and p90 in us. Also the share of
#    the commands that reached the mailbox while the member (not a syncer)
#    was inside a fdatasync, the member's time inside fdatasync per second
#    of the run, and the median fsync.
#
# RAFT_ROUNDS_SHAPES=sync (or writer) runs one shape only.
#
# Run it under `ERL_AFLAGS="+sbwt none +sbwtdcpu none +sbwtdio none"` to
# see whether the schedulers' busy wait is the bound (the peers inherit the
# environment).

{_, 0} = System.cmd("epmd", ["-daemon"])

{:module, tracer_mod, tracer_bin, _} =
  defmodule RaftRounds.Tracer do
    @moduledoc false
    # Runs on the leader's VM: traces `pids`, keeps compact events, hands
    # them over on {:stop, from}.
    def start(pids) do
      parent = self()

      pid =
        spawn(fn ->
          ms = [{:_, [], [{:return_trace}]}]
          :erlang.trace_pattern({:file, :datasync, 1}, ms, [:local])
          :erlang.trace_pattern({:synod_nif, :raft_propose, 2}, true, [:local])

          for p <- pids,
              do: :erlang.trace(p, true, [:send, :receive, :call, :monotonic_timestamp])

          send(parent, :tracing)
          loop([])
        end)

      receive do
        :tracing -> pid
      end
    end

    defp loop(acc) do
      receive do
        {:trace_ts, pid, :receive, msg, ts} ->
          loop([{ts, pid, :receive, recv_kind(msg)} | acc])

        {:trace_ts, pid, :send, msg, _to, ts} ->
          loop([{ts, pid, :send, send_kind(msg)} | acc])

        {:trace_ts, pid, :call, {:file, :datasync, _}, ts} ->
          loop([{ts, pid, :sync_call, nil} | acc])

        {:trace_ts, pid, :return_from, {:file, :datasync, _}, _, ts} ->
          loop([{ts, pid, :sync_return, nil} | acc])

        {:trace_ts, pid, :call, {:synod_nif, :raft_propose, _}, ts} ->
          loop([{ts, pid, :propose, nil} | acc])

        {:stop, from} ->
          :erlang.trace(:all, false, [:all])
          :erlang.trace_pattern({:file, :datasync, 1}, false, [:local])
          :erlang.trace_pattern({:synod_nif, :raft_propose, 2}, false, [:local])
          send(from, {:events, Enum.reverse(acc)})

        _ ->
          loop(acc)
      end
    end

    # Samples `pid` every millisecond until {:stop, from}: how often it
    # waits with an empty mailbox, is inside fdatasync, or is running or
    # runnable (anything else), and its mean mailbox length.
    def sample(pid) do
      spawn(fn -> sample_loop(pid, %{idle: 0, fsync: 0, busy: 0, queued: 0, n: 0}) end)
    end

    defp sample_loop(pid, acc) do
      receive do
        {:stop, from} -> send(from, {:samples, acc})
      after
        1 ->
          case Process.info(pid, [:status, :message_queue_len, :current_function]) do
            nil ->
              send(self(), {:stop, self()})
              sample_loop(pid, acc)

            info ->
              q = info[:message_queue_len]
              waiting? = info[:status] == :waiting

              kind =
                case info[:current_function] do
                  {:prim_file, f, _} when f in [:datasync_nif, :datasync, :sync_nif] -> :fsync
                  {:file, :datasync, _} -> :fsync
                  _ when waiting? and q == 0 -> :idle
                  _ -> :busy
                end

              sample_loop(pid, %{
                acc
                | kind => acc[kind] + 1,
                  queued: acc.queued + q,
                  n: acc.n + 1
              })
          end
      end
    end

    defp recv_kind({:"$gen_call", {pid, tag}, {:command, _, _}}), do: {:command, pid, tag}
    defp recv_kind({:synod_raft, _, _, _, _}), do: :raft
    defp recv_kind({:synod_wal_synced, _}), do: :synced
    defp recv_kind({:synod_sync, _, _}), do: :sync_request
    defp recv_kind(_), do: :other
    defp send_kind({:synod_raft, _, _, _, _}), do: :raft
    defp send_kind({tag, {:ok, _}}), do: {:reply, tag}
    defp send_kind(_), do: :other
  end

alias Synod.LocalCluster

[commands, clients, rounds] =
  case Enum.map(System.argv(), &String.to_integer/1) do
    [c, k, r] -> [c, k, r]
    [c, k] -> [c, k, 2]
    [c] -> [c, 64, 2]
    [] -> [20_000, 64, 2]
  end

defmodule RaftRounds do
  @group :bench_rounds
  @counted [
    {:synod_nif, :raft_propose, 2},
    {:synod_nif, :raft_ready, 1},
    {:file, :datasync, 1},
    {:synod_nif, :raft_step, 2}
  ]

  def group, do: @group

  def start(writer?) do
    dir = Path.join(System.tmp_dir!(), "synod-raft-rounds-#{System.unique_integer([:positive])}")
    names = for i <- 1..3, do: "rr#{i}-#{System.unique_integer([:positive])}"
    peers = LocalCluster.start(3, names: names)
    nodes = Enum.map(peers, &elem(&1, 1))

    :ok =
      Synod.Raft.start_group(@group, nodes, dir,
        machine: Synod.Raft.KV,
        fsync_writer: writer?
      )

    leader = Synod.Test.Raft.wait_leader(@group, nodes)
    {peers, dir, [leader | nodes -- [leader]]}
  end

  def member(node), do: :erpc.call(node, Process, :whereis, [Synod.Raft.member_name(@group)])

  def syncer(node, pid) do
    case :erpc.call(node, :sys, :get_state, [pid]) do
      %{syncer: s} when is_pid(s) -> s
      _ -> nil
    end
  end

  def run(client_node, clients, n) do
    :erpc.call(
      client_node,
      Synod.Test.Raft,
      :throughput,
      [@group, clients, div(n, clients)],
      600_000
    )
  end

  # Also: CPU ms of each VM (`:erlang.statistics(:runtime)`, every thread),
  # and the samples of each member (RaftRounds.Tracer.sample/1).
  def counted(nodes, pids, fun) do
    for n <- nodes,
        mfa <- @counted,
        do: :erpc.call(n, :erlang, :trace_pattern, [mfa, true, [:call_count]])

    samplers =
      for {n, p} <- Enum.zip(nodes, pids), do: :erpc.call(n, RaftRounds.Tracer, :sample, [p])

    cpu0 = for n <- nodes, do: elem(:erpc.call(n, :erlang, :statistics, [:runtime]), 0)
    t0 = System.monotonic_time(:microsecond)
    result = fun.()
    us = System.monotonic_time(:microsecond) - t0
    cpu1 = for n <- nodes, do: elem(:erpc.call(n, :erlang, :statistics, [:runtime]), 0)

    samples =
      for s <- samplers do
        send(s, {:stop, self()})

        receive do
          {:samples, acc} -> acc
        after
          10_000 -> %{idle: 0, fsync: 0, busy: 0, queued: 0, n: 0}
        end
      end

    cpu = Enum.zip_with(cpu1, cpu0, &(&1 - &2))

    counts =
      for n <- nodes do
        for mfa <- @counted do
          {:call_count, c} = :erpc.call(n, :erlang, :trace_info, [mfa, :call_count])
          :erpc.call(n, :erlang, :trace_pattern, [mfa, false, [:call_count]])
          c || 0
        end
      end

    {result, counts, us, cpu, samples}
  end

  def print_samples(samples, cpu, n) do
    rows =
      for {s, c, role} <-
            Enum.zip([samples, cpu, ["leader", "follower (the clients' VM)", "follower"]]) do
        p = fn k -> round(100 * s[k] / max(s.n, 1)) end

        "#{role}: CPU #{round(1000 * c / n)} us/command; member idle #{p.(:idle)}%, " <>
          "in fdatasync #{p.(:fsync)}%, running or runnable #{p.(:busy)}%, " <>
          "mailbox #{f(s.queued / max(s.n, 1))} (#{s.n} samples)"
      end

    IO.puts("  " <> Enum.join(rows, "\n  "))
  end

  def print_counts(counts, n, us) do
    secs = us / 1_000_000
    [[lp, _, ls, _] | _] = counts

    rows =
      for {[p, r, s, st], role} <- Enum.zip(counts, ["leader", "follower", "follower"]) do
        "#{role} #{round(r / secs)} Readies/s, #{round(s / secs)} fsyncs/s " <>
          "(#{f(r / n)} Readies, #{f(s / n)} fsyncs, #{f(st / n)} steps per command" <>
          if(p > 0, do: ", #{p} proposals)", else: ")")
      end

    IO.puts("  counts: " <> Enum.join(rows, "; "))
    IO.puts("  commands per leader fsync: #{f(lp / max(ls, 1))}")
  end

  # Per command: {queued, to_sync_start, fsync, sync_done_to_reply, total}
  # (us), and the other figures of the trace.
  def phases(events, member) do
    events = Enum.map(events, fn {ts, pid, k, v} -> {us(ts), pid, k, v} end)
    t_first = elem(hd(events), 0)
    t_last = elem(List.last(events), 0)

    recvs = for {t, ^member, :receive, {:command, _, tag}} <- events, do: {t, tag}
    props = for {t, ^member, :propose, _} <- events, do: t
    syncs = sync_intervals(events)
    replies = Map.new(for {t, ^member, :send, {:reply, tag}} <- events, do: {tag, t})
    member_syncs = for {c, r, ^member} <- syncs, do: {c, r}

    rows =
      for {{t_recv, tag}, t_prop} <- Enum.zip(recvs, props),
          {sc, sr, _} <- [Enum.find(syncs, fn {c, _, _} -> c >= t_prop end)],
          t_reply <- [Map.get(replies, tag)],
          t_reply != nil and t_reply >= sr do
        {t_prop - t_recv, sc - t_prop, sr - sc, t_reply - sr, t_reply - t_recv}
      end

    # Outside the leader: a client's reply sent -> that client's next
    # command in the leader's mailbox (the reply's hop, the client's own
    # work, the request's hop), on the leader's clock.
    by_client =
      for({t, ^member, :receive, {:command, pid, tag}} <- events, do: {pid, {t, tag}})
      |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))

    outside =
      for {_pid, cmds} <- by_client,
          {{_, tag}, {t_next, _}} <- Enum.zip(cmds, tl(cmds)),
          t_reply = Map.get(replies, tag),
          t_reply != nil,
          do: t_next - t_reply

    in_fsync =
      Enum.count(recvs, fn {t, _} -> Enum.any?(member_syncs, fn {c, r} -> t > c and t < r end) end)

    busy = Enum.reduce(member_syncs, 0, fn {c, r}, a -> a + r - c end)

    %{
      rows: rows,
      outside: outside,
      traced: length(recvs),
      in_fsync: in_fsync,
      member_fsync_share: busy / max(t_last - t_first, 1),
      fsync_p50: Synod.Test.Stats.pct(Enum.map(syncs, fn {c, r, _} -> r - c end), 50),
      syncs: length(syncs)
    }
  end

  # {call, return, pid} of every fdatasync on the traced processes.
  defp sync_intervals(events) do
    {done, _} =
      Enum.reduce(events, {[], %{}}, fn
        {t, pid, :sync_call, _}, {acc, open} -> {acc, Map.put(open, pid, t)}
        {t, pid, :sync_return, _}, {acc, open} -> close(acc, open, pid, t)
        _, state -> state
      end)

    Enum.reverse(done)
  end

  defp close(acc, open, pid, t) do
    case Map.pop(open, pid) do
      {nil, open} -> {acc, open}
      {c, open} -> {[{c, t, pid} | acc], open}
    end
  end

  defp us(ts), do: System.convert_time_unit(ts, :native, :microsecond)
  def f(x), do: :erlang.float_to_binary(x / 1, decimals: 3)
end

load = fn -> :os.cmd(~c"cut -d' ' -f1-3 /proc/loadavg") |> to_string() |> String.trim() end

IO.puts(
  "Synod Raft rounds: 3 voters on loopback, #{clients} clients on a follower's node, " <>
    "#{commands} commands, ERL_AFLAGS=#{inspect(System.get_env("ERL_AFLAGS"))}"
)

shapes =
  case System.get_env("RAFT_ROUNDS_SHAPES", "both") do
    "sync" -> [false]
    "writer" -> [true]
    _ -> [false, true]
  end

for round <- 1..rounds, writer? <- shapes do
  {peers, dir, [leader, follower | _] = nodes} = RaftRounds.start(writer?)
  pids = Enum.map(nodes, &RaftRounds.member/1)
  syncer = RaftRounds.syncer(leader, hd(pids))

  for n <- nodes,
      do:
        {:module, _} =
          :erpc.call(n, :code, :load_binary, [tracer_mod, ~c"raft_rounds.exs", tracer_bin])

  # warm up (code loading, the router's cache on the client's node)
  RaftRounds.run(follower, clients, 2_000)
  l0 = load.()

  {rate, counts, us, cpu, samples} =
    RaftRounds.counted(nodes, pids, fn -> RaftRounds.run(follower, clients, commands) end)

  IO.puts(
    "round #{round}, fsync_writer: #{writer?}: #{rate} commands/s (load #{l0} at start, #{load.()} at end)"
  )

  ran = clients * div(commands, clients)
  RaftRounds.print_counts(counts, ran, us)
  RaftRounds.print_samples(samples, cpu, ran)

  traced_pids = Enum.reject([hd(pids), syncer], &is_nil/1)
  tracer = :erpc.call(leader, RaftRounds.Tracer, :start, [traced_pids])
  traced_rate = RaftRounds.run(follower, clients, div(commands, 4))
  send(tracer, {:stop, self()})

  events =
    receive do
      {:events, e} -> e
    after
      120_000 -> raise "no trace"
    end

  p = RaftRounds.phases(events, hd(pids))
  rows = p.rows
  col = fn i, q -> Synod.Test.Stats.pct(Enum.map(rows, &elem(&1, i)), q) end
  pct = fn list, q -> if list == [], do: 0, else: Synod.Test.Stats.pct(list, q) end
  mean = fn list -> Enum.sum(list) / max(length(list), 1) end

  IO.puts(
    "  phases per command on the leader (#{length(rows)} of #{p.traced} traced, us, p50 / p90): " <>
      "in the mailbox #{col.(0, 50)} / #{col.(0, 90)}, proposed -> its fsync starts #{col.(1, 50)} / #{col.(1, 90)}, " <>
      "fsync #{col.(2, 50)} / #{col.(2, 90)}, fsync done -> reply sent #{col.(3, 50)} / #{col.(3, 90)}; " <>
      "received -> reply #{col.(4, 50)} / #{col.(4, 90)}, mean #{round(mean.(Enum.map(rows, &elem(&1, 4))))}; " <>
      "outside (reply sent -> that client's next command received) #{pct.(p.outside, 50)} / #{pct.(p.outside, 90)}, " <>
      "mean #{round(mean.(p.outside))}; traced run #{traced_rate} commands/s"
  )

  IO.puts(
    "  #{p.in_fsync} of #{p.traced} commands (#{round(100 * p.in_fsync / max(p.traced, 1))}%) reached the mailbox " <>
      "while the member was inside fdatasync; the member inside fdatasync #{round(100 * p.member_fsync_share)}% " <>
      "of the time; #{p.syncs} fsyncs on the leader, median #{p.fsync_p50} us"
  )

  LocalCluster.stop(peers)
  File.rm_rf(dir)
end
