#!/usr/bin/env bash
# Everything CI checks, in the order a failure is cheapest to find. Run from anywhere:
#   scripts/test.sh
# Environment: FUZZ_SECONDS (per fuzz target, default 15: a smoke run of each, which keeps the
# whole under 30 minutes here; docs/security.md says how to fuzz for longer; 0 skips running).
# Builds where cargo does: CARGO_TARGET_DIR (relative: to the directory it was called from) or
# target/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGET="$(target_dir)"

FUZZ_SECONDS=${FUZZ_SECONDS:-15}
started=$SECONDS
# Each step's header says how long the run has taken so far, so a slow step shows in the log.
step() { printf '\n==> [%ss] %s\n' "$((SECONDS - started))" "$*"; }

step "the scripts' helpers (scripts/lib.sh)"
scripts/lib-test.sh

step "format"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

step "clippy (workspace, all targets, with the redis feature)"
cargo clippy --workspace --all-targets --locked --features bidir/redis -- -D warnings
echo "--- the engine without its default features (no tls)"
cargo clippy -p bidir --no-default-features --lib --locked -- -D warnings

step "tests (BackendChoice::Auto: io_uring where the kernel has it; with several nodes over a redis-server of their own)"
scripts/redis/install.sh
cargo test --workspace --locked --features bidir/redis

step "integration tests again on epoll (BIDIR_BACKEND=epoll)"
BIDIR_BACKEND=epoll cargo test --workspace --locked --features bidir/redis --tests

step "tests with the scalar masking path forced (--cfg bidir_force_scalar)"
RUSTFLAGS="--cfg bidir_force_scalar" CARGO_TARGET_DIR="$TARGET/scalar" \
    cargo test -p bidir-protocol --locked --lib

step "encryption with the software AES path forced (RustCrypto's portable code, BIDIR_AES=soft)"
# RustCrypto picks its portable code only by these build cfgs; BIDIR_AES=soft makes bidir pick
# RustCrypto over ring. The key schedule, sealing and the envelope, then encrypted rpc end to end.
RUSTFLAGS='--cfg aes_backend="soft" --cfg polyval_backend="soft"' BIDIR_AES=soft \
    CARGO_TARGET_DIR="$TARGET/soft-aes" cargo test --locked -p bidir-protocol --lib rpc
RUSTFLAGS='--cfg aes_backend="soft" --cfg polyval_backend="soft"' BIDIR_AES=soft \
    CARGO_TARGET_DIR="$TARGET/soft-aes" cargo test --locked -p bidir --test rpc_keys

step "docs"
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace --locked --features bidir/redis

step "main job smoke run"
cargo run --release --locked --example echo_in_memory > /dev/null

step "the application protocol's examples: longwork hears both outcomes over json, bin and encrypted, chat clients talk encrypted (scripts/examples-check.sh)"
scripts/examples-check.sh

step "soak, short form: connection churn on both backends, with and without deflate (scripts/soak.sh --short)"
scripts/soak.sh --short

step "Autobahn|Testsuite against the echo server (1-11, a 12-13 sample), compared with autobahn/expected-server.json"
scripts/autobahn/server.sh
echo "--- again on epoll"
BIDIR_BACKEND=epoll scripts/autobahn/server.sh
echo "--- over TLS (wss://, the suite's own TLS), groups 1-10, on both backends"
AUTOBAHN_EXCLUDE='12.*,13.*' scripts/autobahn/server.sh --tls
AUTOBAHN_EXCLUDE='12.*,13.*' BIDIR_BACKEND=epoll scripts/autobahn/server.sh --tls

step "Autobahn|Testsuite against the clients (engine and blocking), compared with autobahn/expected-client.json"
scripts/autobahn/client.sh --mode engine
echo "--- the engine client over TLS on epoll (groups 1-10; its plain epoll run is the same client code)"
AUTOBAHN_EXCLUDE='12.*,13.*' BIDIR_BACKEND=epoll scripts/autobahn/client.sh --mode engine --tls
scripts/autobahn/client.sh --mode blocking
echo "--- the blocking client over TLS (groups 1-10)"
AUTOBAHN_EXCLUDE='12.*,13.*' scripts/autobahn/client.sh --mode blocking --tls

step "the echo page in headless Chromium"
scripts/browser/check.sh

step "fuzz targets"
if ! cargo fuzz --version > /dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
RUSTFLAGS="--cfg fuzzing" cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings
(
    cd fuzz
    RUSTC_BOOTSTRAP=1 cargo fuzz build
    if [ "$FUZZ_SECONDS" -gt 0 ]; then
        for target in frame upgrade connection inflate client_handshake worker tls rpc_json rpc_bin rpc_envelope rpc_server rpc_key; do
            echo "--- fuzz $target for ${FUZZ_SECONDS}s"
            RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
                -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 |
                grep -E '^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::peak_rss)|ERROR|panicked' || true
            # cargo fuzz exits non-zero on a crash; the pipe hides that, so check artifacts.
            if ls "artifacts/$target"/crash-* "artifacts/$target"/leak-* "artifacts/$target"/oom-* > /dev/null 2>&1; then
                echo "fuzz target $target found a failing input:"; ls "artifacts/$target"
                exit 1
            fi
        done
    fi
)

step "all checks passed in $((SECONDS - started))s"
