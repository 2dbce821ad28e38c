#!/usr/bin/env bash
# The S3 download benchmark (see bench/s3.py and bench/README.md): bench/s3.sh [--quick|--smoke]
set -euo pipefail
exec python3 "$(dirname "$0")/s3.py" "$@"
