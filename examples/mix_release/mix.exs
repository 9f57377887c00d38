defmodule ReleaseExample.MixProject do
  use Mix.Project

  # An application on Synod, built as a release: `MIX_ENV=prod mix release`.
  # Synod is a path dependency here; in your own project use
  # `{:synod, git: "https://example.com/you/synod.git", branch: "main"}`.
  def project do
    [
      app: :release_example,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: [{:synod, path: "../.."}],
      releases: [release_example: [include_executables_for: [:unix]]]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {ReleaseExample.Application, []}]
  end
end
