defmodule Synod.StrayStoreTest do
  # Stray input to the store's and Raft's processes (Synod.Stray): from this
  # VM (another node), thousands of junk calls, casts, messages, calls with
  # a `from` no reply can go to, and Raft messages of the right shape with
  # junk bytes, sent to a peer's Raft member, router, info, and the store's
  # leases and watcher. Every process stays the same pid, every junk call
  # is answered {:error, {:bad_request, _}}, the store keeps serving, the
  # members agree, and the peer logged at most about one line a second per
  # process (counted by a log handler writing to a file on the peer).
  use ExUnit.Case, async: false

  alias Synod.Store
  alias Synod.Test.{Cluster, Wait}

  @moduletag :distributed
  @moduletag timeout: 120_000
  @store :stray_store
  @rounds 4_000

  test "junk from another node: the store's and Raft's processes survive, answer and log a bounded amount" do
    root = Path.join(System.tmp_dir!(), "synod_stray_store_#{System.unique_integer([:positive])}")
    c = Cluster.start(3, data_root: root, prefix: "straystore", store: @store)
    on_exit(fn -> Cluster.stop(c) && File.rm_rf!(root) end)
    [a, _, victim] = c.nodes

    log = Path.join(root, "victim.log")

    :ok =
      :erpc.call(victim, :logger, :add_handler, [
        :stray_count,
        :logger_std_h,
        %{
          level: :warning,
          config: %{file: String.to_charlist(log)},
          formatter: {:logger_formatter, %{single_line: true, template: [:msg, "\n"]}}
        }
      ])

    names = [
      Synod.Raft.member_name(@store),
      Synod.Raft.Router,
      Synod.Raft.Info,
      Synod.Raft.Watches.name(@store),
      Store.Leases.name(@store),
      Store.Watcher.name(@store)
    ]

    pids = fn -> for n <- names, do: :erpc.call(victim, Process, :whereis, [n]) end
    before = pids.()
    assert Enum.all?(before, &is_pid/1)
    for i <- 1..20, do: assert({:ok, _, _} = Store.put(@store, "k#{i}", "v"))

    seed = :erlang.phash2(make_ref())
    :rand.seed(:exsss, {seed, 3, 5})
    IO.puts("stray store test: rand seed #{seed}")
    started = System.monotonic_time(:millisecond)

    for i <- 1..@rounds, name <- names do
      target = {name, victim}

      case rem(i, 8) do
        0 ->
          request = junk(3)
          assert {:error, {:bad_request, ^request}} = GenServer.call(target, request, 5_000)

        1 ->
          request = malformed(name)
          assert {:error, {:bad_request, ^request}} = GenServer.call(target, request, 5_000)

        2 ->
          GenServer.cast(target, junk(3))

        3 ->
          send(target, {:"$gen_call", junk(2), junk(2)})

        4 ->
          # the shape of a Raft message, junk inside
          send(target, {:synod_raft, @store, :rand.uniform(1_000_000_000_000), a, junk_binary()})

        5 ->
          send(target, {:synod_raft, junk(1), junk(1), junk(1), junk(1)})

        _ ->
          send(target, junk(3))
      end
    end

    elapsed_s = div(System.monotonic_time(:millisecond) - started, 1000) + 1

    # everything was taken in (a call answered after the junk went in)
    assert %{group: @store} = :erpc.call(victim, Synod.Raft, :status, [@store])
    assert pids.() == before

    # the store still serves, and every member applies the same
    for i <- 21..40, do: assert({:ok, _, _} = Store.put(@store, "k#{i}", "v"))
    assert {:ok, %{value: "v"}} = :erpc.call(victim, Store, :get, [@store, "k40"])

    Wait.until(
      fn ->
        applied = for n <- c.nodes, do: :erpc.call(n, Synod.Raft, :status, [@store]).applied
        length(Enum.uniq(applied)) == 1
      end,
      15_000
    )

    :ok = :erpc.call(victim, :logger, :remove_handler, [:stray_count])
    lines = log |> File.read!() |> String.split("\n", trim: true)
    stray = Enum.filter(lines, &(&1 =~ "ignored a" or &1 =~ "refused"))
    sent = @rounds * length(names)

    IO.puts(
      "stray store test: #{sent} junk inputs in ~#{elapsed_s} s, #{length(lines)} log lines"
    )

    # at most one line a second per process (and one more for each at the
    # start), where a log line per input would be thousands
    assert stray != []
    assert length(lines) <= length(names) * (elapsed_s + 2)
  end

  # Requests with a known name and the wrong arguments.
  defp malformed(name) do
    cond do
      name == Synod.Raft.member_name(@store) ->
        Enum.random([
          {:conf_change, :explode, 1},
          {:peer, "x", 1},
          {:query, :f, :eventually},
          {:transfer_leader, "n"},
          {:subscribe_applied, :nobody}
        ])

      name == Synod.Raft.Watches.name(@store) ->
        Enum.random([{:add, :k, :not_a_target, :all}, {:add, :k, fn -> :ok end, :all}])

      name == Store.Leases.name(@store) ->
        Enum.random([{:grant, -1}, {:keep_alive, "x"}, {:revoke, 0}])

      name == Store.Watcher.name(@store) ->
        Enum.random([
          {:watch, make_ref(), self(), {:weird}, 1},
          {:watch, make_ref(), self(), {:key, 1}, 1},
          {:unwatch, :x}
        ])

      true ->
        {:view, junk(1)}
    end
  end

  defp junk(0), do: Enum.random([:a, 1, "s", 1.5, self(), make_ref(), [], {}])

  defp junk(depth) do
    case :rand.uniform(5) do
      1 -> List.to_tuple(for _ <- 1..:rand.uniform(4), do: junk(depth - 1))
      2 -> for _ <- 1..:rand.uniform(3), do: junk(depth - 1)
      3 -> %{junk(0) => junk(depth - 1)}
      4 -> junk_binary()
      _ -> junk(0)
    end
  end

  defp junk_binary, do: :crypto.strong_rand_bytes(:rand.uniform(64))
end
