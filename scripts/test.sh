#!/usr/bin/env bash
# Runs every Synod test: installs what is missing, then
#   1. C: cmocka tests (optimised, then under ASan+UBSan) and short fuzz runs
#   2. Elixir: ExUnit, including real :peer clusters on 127.0.0.1
#   3. Erlang: EUnit through rebar3, calling Synod from Erlang
# Stops at the first failing stage and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
epmd -daemon
export ERL_AFLAGS="-kernel prevent_overlapping_partitions false"

stage() { printf '\n\033[1m### %s\033[0m\n' "$*"; }

stage "C cores: cmocka, ASan+UBSan, fuzz smoke"
make --no-print-directory test FUZZ_SECONDS="${FUZZ_SECONDS:-15}"

stage "Elixir: ExUnit"
MIX_ENV=test mix test

stage "Erlang: EUnit and Common Test via rebar3, the rebar3 app and mix release examples"
bash scripts/test_erlang.sh

stage "all test stages passed"
