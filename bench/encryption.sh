#!/usr/bin/env bash
# Encryption at rest: plain vs EncryptedStorage stream (see bench/encryption.py and bench/README.md).
set -euo pipefail
exec python3 "$(dirname "$0")/encryption.py" "$@"
