#!/usr/bin/env bash
# Runs every Synod test: installs what is missing, then
#   0. formatting: clang-format over the C, mix format over the Elixir
#   1. C: cmocka tests (optimised, then under ASan+UBSan) and short fuzz runs
#   2. Elixir: ExUnit, including real :peer clusters on 127.0.0.1, compiled
#      with warnings as errors (test files too)
#   3. Erlang: EUnit through rebar3, calling Synod from Erlang
#   4. the fault-injection smoke matrix (docs/reliability.md)
# Stops at the first failing stage and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
epmd -daemon
export ERL_AFLAGS="-kernel prevent_overlapping_partitions false"

# Each stage heading shows the seconds since the start (the whole command
# must stay within 15 minutes on a 2-core machine).
started=$SECONDS
stage() { printf '\n\033[1m### [%4ds] %s\033[0m\n' "$((SECONDS - started))" "$*"; }

stage "Formatting: clang-format --dry-run --Werror, mix format --check-formatted"
clang-format --dry-run --Werror c_src/*.[ch] c_src/nif_assert/*.h cnode/*.[ch] test/c/*.[ch] bench/c/*.c fuzz/*.c
mix format --check-formatted

stage "C cores: cmocka, ASan+UBSan, fuzz smoke"
make --no-print-directory -j"$(nproc)" test-bins
make --no-print-directory test FUZZ_SECONDS="${FUZZ_SECONDS:-5}"

stage "Elixir: ExUnit"
MIX_ENV=test mix test --warnings-as-errors --slowest 20

stage "Erlang: EUnit and Common Test via rebar3, the rebar3 app and mix release examples"
bash scripts/test_erlang.sh

stage "Fault injection: smoke matrix (histories under _build/fault)"
bash test/fault/run.sh --matrix smoke

stage "all test stages passed"
