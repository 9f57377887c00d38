#!/usr/bin/env bash
# Runs the fault-injection suite (test/fault/run.exs) on a distributed
# controller VM, e.g.
#
#   bash test/fault/run.sh --workload register --nemesis kill --seed 7
#   bash test/fault/run.sh --matrix smoke
#
# Prints one summary line per case; everything else the VMs print (the
# peers' logs: members stuck on a full disk, connections refused across a
# cut) goes to _build/fault/run.log. The exit status is the suite's.
set -uo pipefail
cd "$(dirname "$0")/../.."
epmd -daemon
export ERL_AFLAGS="-kernel prevent_overlapping_partitions false"
mkdir -p _build/fault
MIX_ENV=test mix run test/fault/run.exs "$@" 2>&1 | tee _build/fault/run.log | grep --line-buffered '^fault '
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || echo "fault suite failed (status $status); see _build/fault/run.log"
exit "$status"
