#!/usr/bin/env bash
# Smoke test as a newcomer would do it: start the relay in demo mode, send one message with swaks,
# find it among the messages the embedded Graph emulator accepted, stop the relay with SIGTERM.
# Usage: test/smoke/swaks-smoke.sh [PORT]   (needs swaks; CI installs it)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
port="${1:-2625}"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

command -v swaks >/dev/null || { echo "swaks-smoke: swaks is not installed (apt-get install swaks)" >&2; exit 2; }
[ -f "$root/dist/main.js" ] || { echo "swaks-smoke: run npm run build first" >&2; exit 2; }

node "$root/dist/main.js" demo --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --dir "$work/demo" >"$work/relay.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q '"event":"relay.started"' "$work/relay.log" && break; sleep 0.1; done
grep -q '"event":"relay.started"' "$work/relay.log" || { echo "swaks-smoke: relay did not start"; cat "$work/relay.log"; exit 1; }

printf 'attachment bytes \x01\x02\x03\n' >"$work/report.bin"
timeout 30 swaks --server "127.0.0.1:$port" --from backup@contoso.example --to ops@contoso.example,hidden@contoso.example \
  --header "To: ops@contoso.example" --header "Subject: swaks smoke $$" --attach "@$work/report.bin" >"$work/swaks.log" 2>&1 \
  || { echo "swaks-smoke: swaks failed"; cat "$work/swaks.log"; exit 1; }
grep -q '^<-  250 2.6.0 Ok: queued as ' "$work/swaks.log" || { echo "swaks-smoke: no 250 queued reply"; cat "$work/swaks.log"; exit 1; }

for _ in $(seq 1 100); do ls "$work/demo/delivered/"*.eml >/dev/null 2>&1 && break; sleep 0.1; done
eml="$(ls "$work/demo/delivered/"*.eml 2>/dev/null | head -1)"
[ -n "$eml" ] || { echo "swaks-smoke: nothing delivered"; cat "$work/relay.log"; exit 1; }
grep -q "^Subject: swaks smoke $$" "$eml" || { echo "swaks-smoke: subject missing"; exit 1; }
grep -q '^Bcc: hidden@contoso.example' "$eml" || { echo "swaks-smoke: envelope-only recipient not in Bcc"; exit 1; }
grep -q '^Received: from ' "$eml" || { echo "swaks-smoke: no Received trace"; exit 1; }

kill -TERM "$pid"
wait "$pid"; code=$?
[ "$code" -eq 0 ] || { echo "swaks-smoke: relay exited with $code after SIGTERM"; exit 1; }
grep -q '"event":"relay.stopped"' "$work/relay.log" || { echo "swaks-smoke: no graceful stop logged"; exit 1; }
echo "swaks-smoke: ok (delivered $(basename "$eml"))"
