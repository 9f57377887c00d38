#!/usr/bin/env bash
# rebar3's build step for Synod (post_hooks of erlc_compile in rebar.config).
#
# rebar3 compiles src/*.erl; this builds the rest: the C parts and the Elixir
# modules, with mix (MIX_ENV=prod, in this directory's _build/prod), and copies
# the Elixir beams into the ebin rebar3 is building, before rebar3 writes
# synod.app from what that ebin holds. rebar3 runs its hooks in the directory
# of the app they belong to (this checkout, wherever it sits), so nothing here
# may use $REBAR_ROOT_DIR, the top-level project.
set -euo pipefail

# The app's output directory: the one whose src/ is this directory's src/
# (rebar3 links it for checkouts and top-level apps, and builds a git
# dependency in place).
out=""
for dir in "${REBAR_DEPS_DIR:-}/synod" "${REBAR_CHECKOUTS_OUT_DIR:-}/synod" \
  "${REBAR_BUILD_DIR:-}/lib/synod"; do
  if [ "$(realpath -q "$dir/src" || true)" = "$(realpath src)" ]; then
    out=$dir
    break
  fi
done
if [ -z "$out" ]; then
  echo "synod: cannot find the ebin rebar3 builds for $(pwd)" >&2
  exit 1
fi

for tool in make mix; do
  if ! command -v "$tool" >/dev/null; then
    echo "synod: building Synod needs $tool (Debian: build-essential, elixir;" \
      "bash scripts/setup.sh demo installs them)" >&2
    exit 1
  fi
done

# rebar3 exports ERL (the erl binary); elixir's launcher appends its flags to
# an exported ERL, and the Makefile would then run that as erl.
unset ERL MIX_BUILD_PATH MIX_BUILD_ROOT
MIX_ENV=prod mix compile
rm -f "$out"/ebin/Elixir.*.beam
cp _build/prod/lib/synod/ebin/Elixir.*.beam "$out/ebin/"
