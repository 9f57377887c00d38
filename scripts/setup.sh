#!/usr/bin/env bash
# Installs the Debian 12 packages Synod needs, only those that are missing.
#
#   bash scripts/setup.sh demo   what building Synod and running the demo need
#   bash scripts/setup.sh test   that, plus what the tests need (the default)
#
# Idempotent: a second run installs nothing. Prints how long the install took.
# Without root (and without passwordless sudo) it prints the exact command to
# run and exits 1.
set -euo pipefail

# Building Synod (NIF, C node, Elixir) and running it: 15 packages on a fresh
# machine of the project's kind, 75 on a minimal Debian 12 (see docs/erlang.md).
demo_packages=(
  build-essential   # gcc, make
  erlang-base       # erl, epmd, compiler, sasl
  erlang-dev        # erl_nif.h, erl_interface (ei.h, libei.a)
  elixir            # elixir, mix (brings crypto, inets, parsetools, public-key, tools)
  libsodium-dev
)

# The tests on top: rebar3 pulls the whole Erlang toolchain (dialyzer, reltool
# and with them wx and GTK), which the demo never needs.
test_packages=(
  clang             # libFuzzer (-fsanitize=fuzzer) for the fuzz harnesses
  libclang-rt-14-dev
  clang-format
  erlang-eunit
  erlang-common-test
  erlang-proper     # PropEr, for the model tests (test/support/proper)
  erlang-syntax-tools
  rebar3
  libcmocka-dev
  valgrind          # the C node's leak and memory-error test
  chromium          # headless, for the status page test (test/elixir/obs_page_test.exs)
)

case "${1:-test}" in
  demo) packages=("${demo_packages[@]}") ;;
  test) packages=("${demo_packages[@]}" "${test_packages[@]}") ;;
  *)
    echo "usage: $0 [demo|test]" >&2
    exit 2
    ;;
esac

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -eq 0 ]; then
  runner=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  runner=(sudo)
else
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: run as root:  apt-get update && ${cmd[*]}" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
started=$SECONDS
before=$(dpkg-query -W -f='${Status}\n' | grep -c "install ok installed")
export DEBIAN_FRONTEND=noninteractive
"${runner[@]}" apt-get update -qq
"${runner[@]}" "${cmd[@]}"
after=$(dpkg-query -W -f='${Status}\n' | grep -c "install ok installed")
echo "setup: installed $((after - before)) Debian packages in $((SECONDS - started)) s"
