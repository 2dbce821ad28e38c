#!/usr/bin/env bash
# A bounded attack run on loopback against the real server (see bench/attack.py and
# bench/README.md): bench/attack.sh
set -euo pipefail
exec python3 "$(dirname "$0")/attack.py" "$@"
