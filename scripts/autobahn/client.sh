#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingserver against the client example (examples/autobahn_client)
# and compares the results with the golden file autobahn/expected-client.json.
#
#   scripts/autobahn/client.sh [--full | CASES] [--mode engine|blocking] [--tls] [--update]
#
#   (none)    groups 1-11 whole, and of the compression groups 12-13 the first and the
#             eleventh case of every sub-group: what CI runs
#   --full    every case (about 15 minutes here: wstest itself is the bottleneck)
#   CASES     comma-separated case patterns, e.g. "12.1.*,13.3.*"
#   --mode    engine (default): client connections opened from the engine's workers;
#             blocking: the blocking WebSocket client
#   --tls     over TLS: the fuzzing server listens on wss:// with a throwaway certificate
#             (made in the report directory), which the client trusts (--trust) besides
#             its built-in roots; compared with the same golden file, since TLS must not
#             change any case's outcome
#   --update  write the results into the golden file instead of comparing
#
# Environment: AUTOBAHN_EXCLUDE (patterns to skip), AUTOBAHN_OUT (report directory, default
# autobahn/client-MODE, or autobahn/client-MODE-tls with --tls, in cargo's target directory,
# which honours CARGO_TARGET_DIR),
# AUTOBAHN_DEFLATE (the client's offer: shared (default), off, dedicated:BITS).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
HERE="$ROOT/scripts/autobahn"
TARGET="$(target_dir)"

source "$HERE/common.sh"
CASES="$SUBSET"
MODE=engine
UPDATE=()
TLS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --update) UPDATE=(--update) ;;
        --full) CASES="*" ;;
        --mode) MODE="$2"; shift ;;
        --tls) TLS=-tls ;;
        *) CASES="$1" ;;
    esac
    shift
done
EXCLUDE="${AUTOBAHN_EXCLUDE-}"
OUT="${AUTOBAHN_OUT:-$TARGET/autobahn/client-$MODE$TLS}"
OUT="$(realpath -m "$OUT")"
GOLDEN="$ROOT/autobahn/expected-client.json"

autobahn_setup

cargo build --release --locked --example autobahn_client -q
PORT="$(free_port)"

rm -rf "$OUT"
mkdir -p "$OUT"
URL="ws://127.0.0.1:$PORT"
CLIENT_TLS=()
if [ -n "$TLS" ]; then
    make_cert "$OUT"
    URL="wss://127.0.0.1:$PORT"
    CLIENT_TLS=(--trust "$OUT/cert.pem")
fi
python3 - "$OUT/spec.json" "$CASES" "$EXCLUDE" "$URL" "$OUT/reports" << 'PY'
import json, os, sys
path, cases, exclude, url, outdir = sys.argv[1:]
split = lambda s: [x.strip() for x in s.split(",") if x.strip()]
spec = {
    "url": url,
    "options": {"failByDrop": False},
    "outdir": outdir,
    "webport": 0,
    "cases": split(cases) or ["*"],
    "exclude-cases": split(exclude),
    "exclude-agent-cases": {},
}
if url.startswith("wss:"):  # the suite listens with TLS, with the certificate beside the spec
    here = os.path.dirname(path)
    spec.update(cert=here + "/cert.pem", key=here + "/key.pem")
json.dump(spec, open(path, "w"), indent=2)
PY
"$VENV/bin/python" "$HERE/wstest.py" --list-cases "$OUT/spec.json" > "$OUT/cases.txt"
echo "autobahn client ($MODE): $(wc -l < "$OUT/cases.txt") cases, fuzzingserver on $URL (log: $OUT/wstest.log)"
trap stop_server EXIT
start_server "the fuzzing server" "$PORT" "$OUT/wstest.log" 60 \
    env -C "$OUT" "$VENV/bin/python" "$HERE/wstest.py" -m fuzzingserver -s "$OUT/spec.json"
start=$SECONDS
timeout 3000 "$TARGET/release/examples/autobahn_client" --url "$URL" "${CLIENT_TLS[@]}" \
    --agent "$AGENT" --mode "$MODE" --deflate "${AUTOBAHN_DEFLATE:-shared}" > "$OUT/client.log" 2>&1 \
    || { echo "the client failed:"; tail -20 "$OUT/client.log"; exit 1; }
echo "autobahn client ($MODE${TLS:+, TLS}): ran in $((SECONDS - start))s"
python3 "$HERE/compare.py" "$OUT/reports" "$GOLDEN" "$AGENT" "$OUT/cases.txt" "${UPDATE[@]}"
