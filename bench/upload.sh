#!/usr/bin/env bash
# Upload throughput and server memory: a 1 GiB multipart upload (curl, another process) through
# UploadForm → UploadPolicy → LocalStorage, three rounds; reports MB/s and the server's peak RSS.
#   bench/upload.sh            1 GiB, 3 rounds
#   bench/upload.sh --quick    1 GiB, 1 round
#   bench/upload.sh --smoke    16 MiB, 1 round (proves the harness works; no figures)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=1024 rounds=3
[ "${1:-}" = "--quick" ] && rounds=1
[ "${1:-}" = "--smoke" ] && size_mib=16 rounds=1

cargo build --release -q -p private-storage-bench --bin upload-server
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/upload.bin"
mkdir "$work/root"

speeds=()
for round in $(seq "$rounds"); do
  rm -rf "$work/root"/*
  target/release/upload-server "$work/root" > "$work/server.log" &
  server=$!
  url=""
  for _ in $(seq 200); do  # the server prints its URL once it listens
    url=$(sed -n 's/^listening //p' "$work/server.log")
    [ -n "$url" ] && break
    sleep 0.05
  done
  out=$(curl -sS -F "file=@$work/upload.bin;type=application/octet-stream" -w '\n%{http_code} %{speed_upload}' "$url")
  read -r code speed <<< "$(tail -n1 <<< "$out")"
  [ "$code" = 200 ] || { echo "upload failed: $out"; exit 1; }
  stored=$(head -n1 <<< "$out" | cut -d' ' -f2)
  [ "$stored" = "$((size_mib * 1024 * 1024))" ] || { echo "stored $stored bytes"; exit 1; }
  hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
  kill "$server"; wait "$server" 2>/dev/null || true
  mbps=$(awk -v s="$speed" 'BEGIN {printf "%.0f", s / 1e6}')
  speeds+=("$mbps")
  echo "round $round: ${mbps} MB/s, server peak RSS $((hwm_kib / 1024)) MiB"
done
sorted=$(printf '%s\n' "${speeds[@]}" | sort -n)
echo "upload ${size_mib} MiB: median $(sed -n "$(( (rounds + 1) / 2 ))p" <<< "$sorted") MB/s (min $(head -n1 <<< "$sorted"), max $(tail -n1 <<< "$sorted"))"
