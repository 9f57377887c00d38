defmodule Mix.Tasks.Compile.SynodMake do
  @moduledoc """
  Builds Synod's C parts (`priv/synod_nif.so`, `priv/synod_cnode`) with the
  project Makefile before the Erlang and Elixir compilers run.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    {output, status} = System.cmd("make", ["--no-print-directory", "all"], stderr_to_stdout: true)

    # A fresh checkout's build directory has no priv/ link until this runs;
    # without it the first `mix test` cannot find the NIF.
    Mix.Project.build_structure()

    if status == 0 do
      if output =~ ~r/\b(cc|gcc|clang)\b/, do: Mix.shell().info(String.trim_trailing(output))
      {:ok, []}
    else
      IO.write(:stderr, output)
      Mix.raise("make failed with status #{status}")
    end
  end

  @impl true
  def clean, do: System.cmd("make", ["clean"])
end

defmodule Synod.MixProject do
  use Mix.Project

  def project do
    [
      app: :synod,
      version: "0.1.0",
      elixir: "~> 1.14",
      compilers: [:synod_make | Mix.compilers()],
      elixirc_paths: elixirc_paths(Mix.env()),
      # the test command compiles with warnings as errors (scripts/test.sh)
      elixirc_options: [warnings_as_errors: Mix.env() == :test],
      # PropEr (Debian's erlang-proper, in OTP's lib dir, so on the code path)
      # is used by the test support modules only
      xref: [exclude: [:proper, :proper_types, :proper_statem]],
      start_permanent: Mix.env() == :prod,
      deps: [],
      test_paths: ["test/elixir"],
      docs: [main: "readme"]
    ]
  end

  def application do
    [extra_applications: [:logger, :inets], mod: {Synod.Application, []}]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(:dev), do: ["lib", "demo/support"]
  defp elixirc_paths(_), do: ["lib"]
end
