#!/usr/bin/env bash
# Runs the fault-injection suite (test/fault/run.exs) on a distributed
# controller VM: bash test/fault/run.sh --workload register --nemesis kill
# The peers' expected complaints about cut connections (a partition is a
# cookie cut) are left out of the output; the exit status is the suite's.
set -uo pipefail
cd "$(dirname "$0")/../.."
epmd -daemon
export ERL_AFLAGS="-kernel prevent_overlapping_partitions false"
MIX_ENV=test mix run --no-start test/fault/run.exs "$@" 2>&1 |
  awk '/Connection attempt from node .* rejected/ { skip = 1; next } skip && /^$/ { next } { skip = 0; print; fflush() }'
exit "${PIPESTATUS[0]}"
