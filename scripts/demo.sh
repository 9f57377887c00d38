#!/usr/bin/env bash
# Synod's main job: installs what is missing, builds, and runs the local
# cluster demo (demo/cluster.exs) on real distributed Erlang nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
epmd -daemon
export ERL_AFLAGS="-kernel prevent_overlapping_partitions false"
mix compile
exec elixir --name synod_demo@127.0.0.1 -S mix run demo/cluster.exs
