#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs the real peers the tests use
# (nginx, Apache with mod_xsendfile, headless Chromium, PostgreSQL, wrk and valgrind for the
# benchmark smoke runs, clamd for virus scanning, Garage for S3), then lints, runs every test
# and doc-test, and checks that the README's run command starts the server and that a user can
# log in.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/sbin/apache2 ] || missing+=(apache2)
[ -e /usr/lib/apache2/modules/mod_xsendfile.so ] || missing+=(libapache2-mod-xsendfile)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
[ -d /usr/lib/postgresql ] || missing+=(postgresql)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v callgrind_control >/dev/null 2>&1 || missing+=(valgrind)
[ -x /usr/sbin/clamd ] || missing+=(clamav-daemon)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# Garage: a production S3-compatible store the S3 tests start on loopback (the tests fail, never
# skip, without it). Built once, at opt-level 1: ~7 minutes here instead of ~20, fast enough
# for tests (bench/s3.sh figures come from a full release build).
command -v garage >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ] ||
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install garage@2.5.0 --locked --no-default-features --features bundled-libs,sqlite

# The Node-side peers of the server tests: playwright-core (no browser download: it drives
# Debian's chromium), tus-js-client and the official tus server.
npm ci --prefix crates/private-storage-server/tests/node --no-audit --no-fund --silent
# tuspy, the Python tus client, in a virtualenv of the target folder.
[ -x target/pyenv/bin/python ] || python3 -m venv target/pyenv
target/pyenv/bin/pip install --quiet --disable-pip-version-check -r crates/private-storage-server/tests/python/requirements.txt

echo "==> rustfmt"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check

echo "==> clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# The README's run command starts the server (the whole flow on the binary — user add, serve,
# log in, upload, download, SIGTERM — is the test cli::the_readme_flow_runs_on_the_binary).
echo "==> the README's run command: cargo run -p private-storage-server -- serve"
work=$(mktemp -d)
server=""
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
manifest="$PWD/Cargo.toml"
# Built first, so that the wait below times the start, not a first build (minutes on a fresh
# machine).
cargo build -q --locked -p private-storage-server
(cd "$work" && exec cargo run -q --locked --manifest-path "$manifest" -p private-storage-server -- serve --bind 127.0.0.1:0 >serve.log 2>&1) &
server=$!
url=""
for _ in $(seq 1200); do  # it prints its URL once it listens
  url=$(grep -o 'http://[0-9.:]*/' "$work/serve.log" | head -n1 || true)
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "the server did not start"; cat "$work/serve.log"; exit 1; }
[ "$(curl -fsS "${url}healthz")" = ok ] && grep -q "No users yet" "$work/serve.log"
kill -TERM "$server"
wait "$server"  # a graceful shutdown exits 0
server=""
echo "  served at $url and stopped cleanly"

echo "==> benchmark harness smoke runs"
bench/upload.sh --smoke
bench/tus.sh --smoke
bench/run.sh --smoke
bench/s3.sh --smoke
bench/encryption.sh --smoke
bench/scale.sh --smoke
bench/instructions.sh --smoke

echo "==> fuzz smoke runs (seconds per target; longer runs: see README, Testing)"
for target in key serve disposition upload token; do
  corpus=$(mktemp -d)
  if ! cargo fuzz run -s none "$target" "$corpus" "fuzz/seeds/$target" -- -max_total_time=4 >"$corpus.log" 2>&1; then
    tail -n 40 "$corpus.log"
    exit 1
  fi
  echo "  $target: $(grep -oE 'Done [0-9]+ runs' "$corpus.log" | tail -n1)"
  rm -rf "$corpus" "$corpus.log"
done

echo "==> doc-tests"
cargo test --workspace --all-features --doc --locked

echo "==> tests"
cargo nextest run --workspace --all-features --locked --no-fail-fast
