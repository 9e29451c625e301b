#!/usr/bin/env bash
# Build tests/compat/kafka_compat.c (into .cache/compat/) and run it.
#
#   tests/compat/run.sh                # starts a fresh broker on $COMPAT_PORT
#                                      # (default 19192), runs, stops it
#   tests/compat/run.sh HOST:PORT      # runs against an already running broker
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.cache/compat"
mkdir -p "$out"
gcc -std=c11 -O1 -g -Wall -Wextra -Werror -o "$out/kafka_compat" \
  "$root/tests/compat/kafka_compat.c" $(pkg-config --cflags --libs rdkafka 2>/dev/null || echo -lrdkafka)

if [[ $# -ge 1 ]]; then
  exec "$out/kafka_compat" "$1"
fi

port=${COMPAT_PORT:-19192}
datadir="$out/broker-$port"
"$root/scripts/kafka/start.sh" --fresh "$port" "$datadir"
trap '"$root/scripts/kafka/stop.sh" "$datadir" >/dev/null' EXIT
"$out/kafka_compat" "127.0.0.1:$port"
