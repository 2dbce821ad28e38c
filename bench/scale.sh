#!/usr/bin/env bash
# The scale benchmark (see bench/scale.py and bench/README.md): bench/scale.sh [--quick|--smoke]
set -euo pipefail
exec python3 "$(dirname "$0")/scale.py" "$@"
