#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient against the echo example and compares the results
# with the golden file autobahn/expected-server.json.
#
#   scripts/autobahn/server.sh [--full | CASES] [--tls] [--update]
#
#   (none)    groups 1-11 whole, and of the compression groups 12-13 the first and the
#             eleventh case of every sub-group (a small message, and an 8 KiB one cut into
#             256-byte fragments): what CI runs, in about two minutes
#   --full    every case (about 15 minutes here: wstest itself is the bottleneck)
#   CASES     comma-separated case patterns, e.g. "12.1.*,13.3.*"
#   --tls     over TLS: the echo server gets a throwaway certificate (made in the report
#             directory) and the suite connects to wss://; compared with the same golden
#             file, since TLS must not change any case's outcome. The suite does not verify
#             the certificate and sends no SNI (an IP address in the URL; a "hostname" in
#             the spec would make it verify against the system's roots)
#   --update  write the results into the golden file instead of comparing
#
# Environment: AUTOBAHN_EXCLUDE (patterns to skip), AUTOBAHN_OUT (report directory, default
# autobahn/server, or autobahn/server-tls with --tls, in cargo's target directory, which
# honours CARGO_TARGET_DIR).
#
# The echo server runs with the limits the performance cases need — 16 MiB messages, and
# 131072 frames per message (9.3.1 and 9.4.1 send a first frame and 65536 continuations) —
# set on its command line; the library's defaults stay as they are. It negotiates
# permessage-deflate with the shared profile (its default); AUTOBAHN_DEFLATE=dedicated:15
# (or any echo --deflate value) runs the suite against another profile.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
HERE="$ROOT/scripts/autobahn"
TARGET="$(target_dir)"

source "$HERE/common.sh"
CASES="$SUBSET"
UPDATE=()
TLS=""
for arg in "$@"; do
    case "$arg" in
        --update) UPDATE=(--update) ;;
        --full) CASES="*" ;;
        --tls) TLS=-tls ;;
        *) CASES="$arg" ;;
    esac
done
EXCLUDE="${AUTOBAHN_EXCLUDE-}"
OUT="${AUTOBAHN_OUT:-$TARGET/autobahn/server$TLS}"
OUT="$(realpath -m "$OUT")"
GOLDEN="$ROOT/autobahn/expected-server.json"

autobahn_setup

cargo build --release --locked --example echo -q
rm -rf "$OUT"
mkdir -p "$OUT"
PORT="$(free_port)"
URL="ws://127.0.0.1:$PORT"
ECHO_TLS=()
if [ -n "$TLS" ]; then
    make_cert "$OUT"
    ECHO_TLS=(--tls "$OUT/cert.pem" "$OUT/key.pem")
    URL="wss://127.0.0.1:$PORT"
fi
trap stop_server EXIT
start_server "the echo server" "$PORT" "$OUT/echo.log" 20 \
    "$TARGET/release/examples/echo" --addr "127.0.0.1:$PORT" --workers 2 --no-pin \
    --max-message 16777216 --max-fragments 131072 --deflate "${AUTOBAHN_DEFLATE:-shared}" \
    "${ECHO_TLS[@]}"

python3 - "$OUT/spec.json" "$CASES" "$EXCLUDE" "$AGENT" "$URL" "$OUT/reports" << 'PY'
import json, sys
path, cases, exclude, agent, url, outdir = sys.argv[1:]
split = lambda s: [x.strip() for x in s.split(",") if x.strip()]
json.dump({
    "options": {"failByDrop": False},
    "outdir": outdir,
    "servers": [{"agent": agent, "url": url}],
    "cases": split(cases) or ["*"],
    "exclude-cases": split(exclude),
    "exclude-agent-cases": {},
}, open(path, "w"), indent=2)
PY
"$VENV/bin/python" "$HERE/wstest.py" --list-cases "$OUT/spec.json" > "$OUT/cases.txt"
echo "autobahn: $(wc -l < "$OUT/cases.txt") cases against $URL (log: $OUT/wstest.log)"
start=$SECONDS
(cd "$OUT" && timeout 3000 "$VENV/bin/python" "$HERE/wstest.py" -m fuzzingclient -s "$OUT/spec.json") \
    > "$OUT/wstest.log" 2>&1 || { echo "wstest failed:"; tail -20 "$OUT/wstest.log"; exit 1; }
echo "autobahn: ran in $((SECONDS - start))s"
python3 "$HERE/compare.py" "$OUT/reports" "$GOLDEN" "$AGENT" "$OUT/cases.txt" "${UPDATE[@]}"
