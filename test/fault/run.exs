# The fault-injection suite's command line (docs/reliability.md).
#
#   bash test/fault/run.sh --workload register --nemesis kill --seed 7
#   bash test/fault/run.sh --matrix smoke
#
# One case prints one summary line and keeps its history under
# _build/fault/<workload>-<nemesis>-<seed>/ (or --out). Exit status: 0 when
# every case passed, 1 when a checker found a violation, 2 when a verdict is
# unknown.

alias Synod.Fault.{Matrix, Nemesis, Runner}

# A name from the command line, as one of `known` (never a new atom).
pick = fn given, known, what ->
  Enum.find(known, &(Atom.to_string(&1) == given)) ||
    raise ArgumentError, "unknown #{what} #{inspect(given)}; one of: #{Enum.join(known, ", ")}"
end

{opts, _, bad} =
  OptionParser.parse(System.argv(),
    strict: [
      workload: :string,
      nemesis: :string,
      seed: :integer,
      nodes: :integer,
      time: :integer,
      out: :string,
      matrix: :string
    ]
  )

if bad != [], do: raise(ArgumentError, "unknown options: #{inspect(bad)}")
Synod.LocalCluster.ensure_distributed()

cases =
  case opts[:matrix] do
    nil ->
      [
        [
          workload: pick.(opts[:workload] || "register", Runner.workloads(), "workload"),
          nemesis: pick.(opts[:nemesis] || "none", Nemesis.all(), "nemesis"),
          seed: opts[:seed] || 1,
          nodes: opts[:nodes] || 3,
          time: opts[:time] || 12_000
        ] ++ if(opts[:out], do: [out: opts[:out]], else: [])
      ]

    matrix ->
      Matrix.cases(pick.(matrix, [:smoke, :long], "matrix"), opts[:seed] || 1)
  end

# A case that crashes is reported as unknown and the matrix goes on.
statuses =
  for c <- cases do
    {status, line} =
      try do
        Runner.run(c)
      rescue
        e ->
          {:unknown,
           "fault #{c[:workload]} #{c[:nemesis]} seed=#{c[:seed]} nodes=#{c[:nodes]} " <>
             "verdict=unknown run_failed=#{inspect(Exception.message(e), printable_limit: 300)}"}
      end

    IO.puts(line)
    status
  end

cond do
  :violation in statuses -> System.halt(1)
  :unknown in statuses -> System.halt(2)
  true -> System.halt(0)
end
