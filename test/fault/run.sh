#!/usr/bin/env bash
# Runs the fault-injection suite (test/fault/run.exs) on a distributed
# controller VM: bash test/fault/run.sh --workload register --nemesis kill
set -euo pipefail
cd "$(dirname "$0")/../.."
epmd -daemon
export ERL_AFLAGS="-kernel prevent_overlapping_partitions false"
MIX_ENV=test exec mix run --no-start test/fault/run.exs "$@"
