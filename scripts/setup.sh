#!/usr/bin/env bash
# Installs the Debian 12 packages Synod needs, only those that are missing.
# Idempotent: a second run installs nothing. Without root (and without
# passwordless sudo) it prints the exact command to run and exits 1.
set -euo pipefail

packages=(
  build-essential   # gcc, make
  pkg-config
  clang             # libFuzzer (-fsanitize=fuzzer) for the fuzz harnesses
  libclang-rt-14-dev
  clang-format
  erlang-base       # erl, epmd
  erlang-dev        # erl_nif.h, erl_interface (ei.h, libei.a)
  erlang-eunit
  erlang-tools
  erlang-parsetools
  erlang-syntax-tools
  erlang-crypto
  erlang-public-key
  erlang-ssl
  erlang-inets
  elixir
  rebar3
  libsodium-dev
  libcmocka-dev
  valgrind          # the C node's leak and memory-error test
  erlang-proper     # PropEr, for the model tests (test/support/proper)
)

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
export DEBIAN_FRONTEND=noninteractive
"${runner[@]}" apt-get update -qq
"${runner[@]}" "${cmd[@]}"
