#!/usr/bin/env bash
# The download benchmark (see bench/run.py and bench/README.md): bench/run.sh [--quick|--smoke]
set -euo pipefail
exec python3 "$(dirname "$0")/run.py" "$@"
