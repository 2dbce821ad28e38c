#!/usr/bin/env bash
# Held load on the real server (see bench/held.py and bench/README.md): bench/held.sh
set -euo pipefail
exec python3 "$(dirname "$0")/held.py" "$@"
