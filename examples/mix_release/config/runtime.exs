import Config

# Read when each node boots: which nodes form the cluster (they also run the
# store), and where this node keeps the store's files.
nodes =
  System.get_env("EXAMPLE_NODES", "")
  |> String.split(",", trim: true)
  |> Enum.map(&String.to_atom/1)

config :release_example,
  nodes: nodes,
  data_dir: System.get_env("EXAMPLE_DATA_DIR", "release_example_data")
