#!/usr/bin/env bash
# Resumable against plain uploads through the release server: the same file sent as one
# multipart `POST /api/files` (curl) and through tus (`POST /api/uploads`, then `PATCH`es of
# 8 MiB over one connection, from Python), both from another process, five rounds each; MB/s,
# their ratio, and the server's peak RSS.
#   bench/tus.sh            256 MiB, 5 rounds
#   bench/tus.sh --smoke    16 MiB, 1 round (proves the harness works; no figures)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=256 rounds=5 chunk_mib=8
[ "${1:-}" = "--smoke" ] && size_mib=16 rounds=1

# The smoke run proves the harness on the debug build the test command has already made.
if [ "${1:-}" = "--smoke" ]; then
  cargo build -q --locked -p private-storage-server
  bin=$PWD/target/debug/private-storage
else
  cargo build --release -q -p private-storage-server
  bin=$PWD/target/release/private-storage
fi
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
data=$work/data
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/file.bin"
"$bin" --data-dir "$data" user add bench --password-stdin <<< "bench password" >/dev/null
token=$("$bin" --data-dir "$data" token create bench 2>/dev/null)
"$bin" --data-dir "$data" -s max_file_size=4GiB serve --bind 127.0.0.1:0 > "$work/server.log" 2>&1 &
server=$!
url=""
for _ in $(seq 200); do  # the server prints its URL once it listens
  url=$(grep -o 'http://[0-9.:]*/' "$work/server.log" | head -n1 || true)
  [ -n "$url" ] && break
  sleep 0.05
done
[ -n "$url" ] || { cat "$work/server.log"; exit 1; }
auth="Authorization: Bearer $token"
bytes=$((size_mib * 1024 * 1024))

multipart() {
  local out code speed
  out=$(curl -sS -H "$auth" -F "file=@$work/file.bin;type=application/octet-stream" -o /dev/null -w '%{http_code} %{speed_upload}' "${url}api/files")
  read -r code speed <<< "$out"
  [ "$code" = 201 ] || { echo "multipart upload failed: $out"; exit 1; }
  awk -v s="$speed" 'BEGIN {printf "%.0f", s / 1e6}'
}

# tus from one client process over one connection (curl per chunk would time curl's start-up,
# ~20 ms here, more than the server spends on an 8 MiB chunk).
resumable() {
  python3 - "$url" "$token" "$work/file.bin" "$((chunk_mib * 1024 * 1024))" <<'PY'
import http.client, os, sys, time, urllib.parse
url, token, path, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
size = os.path.getsize(path)
target = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(target.hostname, target.port)
auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
start = time.perf_counter()
conn.request("POST", "/api/uploads", headers={**auth, "Upload-Length": str(size), "Upload-Metadata": "filename ZmlsZS5iaW4="})
created = conn.getresponse(); created.read()
assert created.status == 201, created.status
location, offset = created.getheader("Location"), 0
with open(path, "rb") as f:
    while offset < size:
        body = f.read(chunk)
        conn.request("PATCH", location, body=body, headers={**auth, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        r = conn.getresponse(); r.read()
        assert r.status == 204, r.status
        offset = int(r.getheader("Upload-Offset"))
print(round(size / (time.perf_counter() - start) / 1e6))
PY
}

plain=() tus=()
for round in $(seq "$rounds"); do
  # Each starts with nothing dirty waiting for the disk (the other's writes flushed first).
  sync; p=$(multipart)
  sync; t=$(resumable)
  plain+=("$p") tus+=("$t")
  echo "round $round: multipart ${p} MB/s, tus (${chunk_mib} MiB chunks) ${t} MB/s"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
mp=$(median "${plain[@]}") mt=$(median "${tus[@]}")
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
echo "upload ${size_mib} MiB: multipart median ${mp} MB/s, tus median ${mt} MB/s, tus/multipart $(awk -v a="$mt" -v b="$mp" 'BEGIN {printf "%.2f", a / b}')x; server peak RSS $((hwm_kib / 1024)) MiB"
