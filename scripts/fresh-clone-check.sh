#!/usr/bin/env bash
# Issue 15: each of the README's two first commands works on its own on a fresh clone, with no
# node_modules and no dist/ - `npm test` first, and `npm start` followed by a demo send with swaks.
# Clones the committed HEAD of this repository twice into a temp directory (one clone per command,
# so neither benefits from the other's install), then removes it.
#   scripts/fresh-clone-check.sh        (CI: .ci/run runs it; needs git, swaks, network or npm cache)
# `npm test` here runs a cheap subset (the unit tests and the command-line tests, which spawn the
# built dist/main.js): the point is the first-run chain install -> build -> vitest; the full suite
# runs in .ci/run itself, on its own clean clone, as its first npm command as well.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
relay_pid=""
cleanup() {
  # The relay started by npm start runs in its own session (setsid): end the whole group.
  if [ -n "$relay_pid" ]; then kill -KILL -- "-$relay_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "fresh-clone-check: FAILED: $*" >&2; exit 1; }
command -v swaks >/dev/null || fail "swaks is not installed (apt-get install swaks; .ci/run does)"

echo "== fresh clone 1: npm test first (no node_modules, no dist)"
git clone --quiet "$root" "$work/test-first"
cd "$work/test-first"
[ ! -e node_modules ] && [ ! -e dist ] || fail "the clone is not fresh"
# CI unset: the subset does not read ../shared/corpus, which is not beside this temp clone.
CI= timeout 900 npm test --silent -- test/unit test/integration/cli.test.ts >"$work/test.log" 2>&1 \
  || { tail -n 60 "$work/test.log"; fail "npm test on a fresh clone exited non-zero (log above)"; }
grep -Eq '^[0-9]+ passed, 0 failed, 0 skipped$' "$work/test.log" || { tail -n 60 "$work/test.log"; fail "no clean summary line"; }
echo "   $(grep -E '^[0-9]+ passed, ' "$work/test.log")"

echo "== fresh clone 2: npm start, then a demo send with swaks"
cd "$root"
git clone --quiet "$root" "$work/start-first"
cd "$work/start-first"
port="$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
setsid npm start --silent -- --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 >"$work/start.log" 2>&1 &
relay_pid=$!
# First run installs and builds before the relay starts: allow 10 minutes, checked every second.
for _ in $(seq 1 600); do
  grep -q '"event":"relay.started"' "$work/start.log" && break
  kill -0 "$relay_pid" 2>/dev/null || { cat "$work/start.log"; fail "npm start exited before the relay started"; }
  sleep 1
done
grep -q '"event":"relay.started"' "$work/start.log" || { tail -n 40 "$work/start.log"; fail "relay.started not seen within 600 s"; }
timeout 60 swaks --server "127.0.0.1:$port" --from demo@contoso.example --to someone@example.org \
  --header "Subject: fresh clone $$" >"$work/swaks.log" 2>&1 || { cat "$work/swaks.log"; fail "swaks failed"; }
grep -q '^<-  250 2.6.0 Ok: queued as ' "$work/swaks.log" || { cat "$work/swaks.log"; fail "no 250 queued reply"; }
for _ in $(seq 1 100); do ls .demo/delivered/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
grep -lq "^Subject: fresh clone $$" .demo/delivered/*.eml 2>/dev/null || { tail -n 40 "$work/start.log"; fail "the demo send did not reach .demo/delivered/"; }
# SIGTERM to the relay itself, as systemd or docker stop would send it (npm, signalled itself,
# exits 143 whatever its child did): the relay is the dist/main.js process in npm start's session.
main_pid="$(pgrep -s "$relay_pid" -f 'dist/main.js' | head -1)"
[ -n "$main_pid" ] || fail "no dist/main.js process under npm start"
kill -TERM "$main_pid"
code=0; timeout 30 tail --pid="$relay_pid" -f /dev/null || code=$?
[ "$code" -eq 0 ] || fail "npm start did not stop within 30 s of SIGTERM"
wait "$relay_pid" || fail "npm start exited with $? after SIGTERM"
relay_pid=""
grep -q '"event":"relay.stopped"' "$work/start.log" || fail "no graceful stop logged"
echo "fresh-clone-check: ok (npm test first and npm start + swaks demo send, each on a fresh clone)"
