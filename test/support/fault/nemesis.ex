defmodule Synod.Fault.Nemesis do
  @moduledoc false
  # The faults of a run, injected by one process on the controller while the
  # clients work: quiet for a while, a fault, held for a while, healed; again
  # until the run's time is up; then everything healed. Every step goes into
  # the history (Collector.nemesis/2) with the nodes it touched.
  #
  #   :none                nothing
  #   :kill                kill -9 of one node (the leader every other time),
  #                        restarted from its own data dir
  #   :kill_majority       kill -9 of a majority at once, all restarted
  #   :partition_leader    the leader cut from every other node
  #   :partition_minority  a random minority (2 of 5, 1 of 3) cut from the rest
  #   :pause               SIGSTOP of one node's VM (the leader every other
  #                        time), SIGCONT after
  #   :disk_full           one node's data dir (a small tmpfs) filled up, freed
  #                        after; see disk_setup/2
  #
  # Times come from the run's seeded generator, so a seed replays the same
  # schedule (the system's own timing still varies).

  alias Synod.Fault.Collector
  alias Synod.Test.Cluster

  @all [:none, :kill, :kill_majority, :partition_leader, :partition_minority, :pause, :disk_full]
  @disk_mb 64

  def all, do: @all

  @doc """
  Runs the schedule until `until` (controller monotonic ms), then heals; sends
  {:nemesis_done, self(), cluster} to `parent` with the cluster as it is now
  (restarted peers have new OS pids).
  """
  def start(kind, cluster, collector, until, seed, parent) do
    spawn_link(fn ->
      :rand.seed(:exsss, {seed, 7, 7})
      c = loop(kind, cluster, collector, until, 0)
      send(parent, {:nemesis_done, self(), c})
    end)
  end

  defp loop(:none, c, _collector, _until, _round), do: c

  defp loop(kind, c, collector, until, round) do
    if now() + 4_000 > until do
      c
    else
      Process.sleep(1_000 + :rand.uniform(1_500))
      {c, undo} = inject(kind, c, collector, round)
      Process.sleep(1_500 + :rand.uniform(2_000))
      c = undo.(c)
      loop(kind, c, collector, until, round + 1)
    end
  end

  # Each fault returns the cluster and how to heal it.
  defp inject(:kill, c, collector, round) do
    victim = pick(c, round)
    Collector.nemesis(collector, {:kill, [victim]})
    Cluster.kill(c, victim)
    {c, restart_fun(collector, [victim])}
  end

  defp inject(:kill_majority, c, collector, _round) do
    victims = Enum.take_random(c.nodes, div(length(c.nodes), 2) + 1)
    Collector.nemesis(collector, {:kill, victims})
    Enum.each(victims, &Cluster.kill(c, &1))
    {c, restart_fun(collector, victims)}
  end

  defp inject(:partition_leader, c, collector, _round) do
    leader = leader(c) || Enum.random(c.nodes)
    cut(c, collector, [leader], c.nodes -- [leader])
  end

  defp inject(:partition_minority, c, collector, _round) do
    minority = Enum.take_random(c.nodes, div(length(c.nodes) - 1, 2))
    cut(c, collector, minority, c.nodes -- minority)
  end

  defp inject(:pause, c, collector, round) do
    victim = pick(c, round)
    Collector.nemesis(collector, {:pause, [victim]})
    Cluster.pause(c, victim)

    {c,
     fn c ->
       Cluster.resume(c, victim)
       Collector.nemesis(collector, {:resume, [victim]})
       c
     end}
  end

  defp inject(:disk_full, c, collector, _round) do
    victim = disk_victim(c)
    filler = Path.join(Cluster.data_dir(c, victim), "filler")
    System.cmd("sh", ["-c", "dd if=/dev/zero of=#{filler} bs=64k 2>/dev/null; sync"])
    Collector.nemesis(collector, {:disk_full, [victim]})

    {c,
     fn c ->
       File.rm(filler)
       Collector.nemesis(collector, {:disk_freed, [victim]})
       c
     end}
  end

  defp cut(c, collector, a, b) do
    Collector.nemesis(collector, {:partition, a, b})
    Cluster.partition(c, a, b)

    {c,
     fn c ->
       heal(c, a, b)
       Collector.nemesis(collector, {:heal, a, b})
       c
     end}
  end

  defp restart_fun(collector, victims) do
    fn c ->
      c = Enum.reduce(victims, c, &Cluster.restart(&2, &1))
      Collector.nemesis(collector, {:restarted, victims})
      c
    end
  end

  # Heals, retrying: a reconnection can race with a node's own reconnect.
  defp heal(c, a, b, tries \\ 5) do
    Cluster.heal(c, a, b)
  rescue
    e in MatchError ->
      if tries == 0, do: reraise(e, __STACKTRACE__)
      Process.sleep(200)
      heal(c, a, b, tries - 1)
  end

  defp pick(c, round) do
    if rem(round, 2) == 0, do: leader(c) || Enum.random(c.nodes), else: Enum.random(c.nodes)
  end

  defp leader(c), do: Enum.find_value(c.nodes, &Cluster.leader_seen_by(c, &1))

  # ---- the small disk ----

  @doc "The node whose data dir is a small tmpfs in a :disk_full run."
  def disk_victim(c), do: List.last(c.nodes)

  @doc "Mounts a #{@disk_mb} MB tmpfs as the data dir of the disk victim (before the store starts)."
  def disk_setup(c_root, nodes) do
    dir = Path.join(c_root, Atom.to_string(List.last(nodes)))
    File.mkdir_p!(dir)
    {_, 0} = System.cmd("mount", ["-t", "tmpfs", "-o", "size=#{@disk_mb}m", "tmpfs", dir])
    dir
  end

  @doc "Unmounts it (lazily: a member may still hold files open)."
  def disk_teardown(dir), do: System.cmd("umount", ["-l", dir], stderr_to_stdout: true)

  defp now, do: System.monotonic_time(:millisecond)
end
