#!/usr/bin/env bash
# Synod from Erlang (a stage of scripts/test.sh; runs alone too):
#   0. rebar3 builds Synod here and runs its EUnit tests and the Common Test
#      suites of test/erlang (the Erlang API on real peers);
# then the examples, built from scratch as a user would build them:
#   1. examples/rebar3_app, an Erlang application that depends on Synod through
#      _checkouts: rebar3 builds Synod (NIF, C node, Elixir) and the app, then
#      runs the app's Common Test suites on real peers; then `rebar3 release`
#      builds it as a release, which is booted and asked to run a session;
#   2. examples/mix_release, a mix release: built, booted as 3 nodes on
#      127.0.0.1 from the release artifacts, checked (a hub and a store across
#      them), stopped.
# The examples work on a copy of this working tree (tracked and untracked
# files, not ignored ones), so nothing from an earlier build is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
epmd -daemon
export ERL_AFLAGS="${ERL_AFLAGS:--kernel prevent_overlapping_partitions false}"

# Elixir's own applications (elixir, logger) on the code path of Erlang VMs.
ERL_LIBS=$(elixir -e 'IO.write(Path.dirname(to_string(:code.lib_dir(:elixir))))')
export ERL_LIBS

echo "== rebar3 eunit, rebar3 ct (test/erlang)"
rebar3 do eunit, ct --dir test/erlang

work=$(mktemp -d "${TMPDIR:-/tmp}/synod-examples.XXXXXX")
release=$work/synod/examples/mix_release/_build/prod/rel/release_example
relx=$work/synod/examples/rebar3_app/_build/default/rel/synod_example/bin/synod_example
names=()
relx_node=""
cleanup() {
  if [ -n "$relx_node" ]; then NODE_NAME=$relx_node "$relx" stop >/dev/null 2>&1 || true; fi
  for name in "${names[@]}"; do
    RELEASE_NODE=$name RELEASE_TMP=$work/run/$name "$release/bin/release_example" stop \
      >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Runs "$@" every 0.2 s until it succeeds, for at most 60 s.
retry() {
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "gave up after 60 s: $*" >&2
  return 1
}

mkdir -p "$work/synod"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done |
  tar --null -T - -cf - | tar -xf - -C "$work/synod"

echo "== examples/rebar3_app: rebar3 ct, rebar3 release (Synod through _checkouts, from scratch)"
started=$SECONDS
(cd "$work/synod/examples/rebar3_app" && rebar3 ct && rebar3 release)
export COOKIE="synod-example-$RANDOM$RANDOM"
relx_node="synod_example_$$@127.0.0.1"
NODE_NAME=$relx_node "$relx" daemon
NODE_NAME=$relx_node retry "$relx" ping
answer=$(NODE_NAME=$relx_node "$relx" eval \
  '{ok, _} = synod_example:start_session(<<"u1">>), synod_example:visit(<<"u1">>).')
echo "release synod_example answered: $answer"
[ "$answer" = "{ok, 1}" ]
NODE_NAME=$relx_node "$relx" stop
relx_node=""
echo "== examples/rebar3_app: built, tested, released and booted in $((SECONDS - started)) s"

echo "== examples/mix_release: MIX_ENV=prod mix release"
started=$SECONDS
(cd "$work/synod/examples/mix_release" && MIX_ENV=prod mix release --quiet)

export RELEASE_DISTRIBUTION=name RELEASE_COOKIE="release-example-$RANDOM$RANDOM"
for n in a b c; do names+=("release_example_${n}_$$@127.0.0.1"); done
EXAMPLE_NODES=$(IFS=,; echo "${names[*]}")
export EXAMPLE_NODES
for name in "${names[@]}"; do
  mkdir -p "$work/run/$name"
  RELEASE_NODE=$name RELEASE_TMP=$work/run/$name EXAMPLE_DATA_DIR=$work/data/$name \
    "$release/bin/release_example" daemon
done

# A daemon answers once its VM is up; the check then waits for the cluster.
RELEASE_NODE=${names[0]} retry "$release/bin/release_example" pid
RELEASE_NODE=${names[0]} "$release/bin/release_example" rpc "ReleaseExample.check()"

for name in "${names[@]}"; do
  RELEASE_NODE=$name RELEASE_TMP=$work/run/$name "$release/bin/release_example" stop
done
for name in "${names[@]}"; do
  RELEASE_NODE=$name retry bash -c '! "$0" pid' "$release/bin/release_example"
done
names=()
echo "== examples/mix_release: built, booted on 3 nodes, checked and stopped in $((SECONDS - started)) s"
