#!/usr/bin/env bash
# Configure and build engage.
#   scripts/build.sh [BUILD_DIR] [extra cmake args...]   (default BUILD_DIR: build)
# Example sanitizer build: scripts/build.sh build-asan -DENGAGE_SANITIZE=ON
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
shift || true
[[ "$dir" = /* ]] || dir="$root/$dir"
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\]|^-- ' || true
test -x "$dir/engage" || { echo "build.sh: build failed" >&2; cmake --build "$dir" -j1; exit 1; }
