#!/usr/bin/env bash
# Set-up command 1: install what engage needs, build it, and run the demo on
# the embedded default (librdkafka's in-process mock cluster: no broker).
#   scripts/demo.sh [engage demo options, e.g. --json or --partitions 8]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" build
exec "$root/build/engage" demo "$@"
