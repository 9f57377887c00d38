defmodule Synod.Fault.Matrix do
  @moduledoc false
  # The fault suite's matrices (docs/reliability.md has their results).
  #
  #   :smoke  the cases the test command runs: each passes on main, all of
  #           them within the test budget (about 150 s on an idle 2-core
  #           machine). :disk_full mounts a tmpfs (the suite runs as root)
  #   :long   every workload under every nemesis on 3 nodes, and the register
  #           and lock workloads under a minority cut, a majority kill and
  #           pauses on 5 nodes; 12 s of operations each

  alias Synod.Fault.{Nemesis, Runner}

  @smoke [
    {:register, :kill, 3, 8_000},
    {:register, :partition_leader, 3, 8_000},
    {:lock, :pause, 3, 8_000},
    {:queue, :kill, 3, 8_000},
    {:election, :partition_minority, 3, 8_000},
    {:watch, :kill_majority, 3, 8_000},
    {:tasks, :pause, 3, 8_000},
    {:register, :disk_full, 3, 8_000}
  ]

  def cases(:smoke, seed),
    do:
      for(
        {w, n, count, time} <- @smoke,
        do: [workload: w, nemesis: n, nodes: count, time: time, seed: seed]
      )

  def cases(:long, seed) do
    three = for w <- Runner.workloads(), n <- Nemesis.all(), do: {w, n, 3}

    five =
      for w <- [:register, :lock],
          n <- [:partition_minority, :kill_majority, :pause],
          do: {w, n, 5}

    for {w, n, count} <- three ++ five,
        do: [workload: w, nemesis: n, nodes: count, time: 12_000, seed: seed]
  end
end
