#!/usr/bin/env bash
# Instructions per download under callgrind (see bench/instructions.py and bench/README.md):
# bench/instructions.sh [--smoke] [--baseline BINARY]
set -euo pipefail
exec python3 "$(dirname "$0")/instructions.py" "$@"
