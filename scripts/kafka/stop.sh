#!/usr/bin/env bash
# Stop a broker started by start.sh.
#
#   scripts/kafka/stop.sh [--kill] [DATADIR]
#
#   DATADIR  default $KAFKA_DATADIR or .cache/kafka/run-${KAFKA_PORT:-19092}
#   --kill   SIGKILL at once (crash simulation; data dir is kept)
# Otherwise SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT (default 30) s.
# Data is always kept; start.sh [--restart] brings the broker back on it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
hard=0; args=()
for a in "$@"; do
  case "$a" in
    --kill) hard=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "kafka/stop.sh: unknown option $a" >&2; exit 1 ;;
    *) args+=("$a") ;;
  esac
done
datadir=${args[0]:-${KAFKA_DATADIR:-$root/.cache/kafka/run-${KAFKA_PORT:-19092}}}
pidfile="$datadir/kafka.pid"
timeout=${KAFKA_STOP_TIMEOUT:-30}

[[ -f "$pidfile" ]] || exit 0          # nothing to stop
pid=$(cat "$pidfile")
datadir=$(cd "$datadir" && pwd)
if ! [[ -n "$pid" && -r /proc/$pid/cmdline ]] \
   || ! tr '\0' ' ' < /proc/$pid/cmdline | grep -qF "kafka.Kafka $datadir/server.properties"; then
  rm -f "$pidfile"; exit 0             # stale pid file
fi
if (( hard )); then
  kill -KILL "$pid" 2>/dev/null || true
else
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "kafka/stop.sh: pid $pid still alive after ${timeout}s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { echo "kafka/stop.sh: ERROR: pid $pid will not die" >&2; exit 1; }
rm -f "$pidfile"
echo "kafka/stop.sh: stopped pid $pid ($datadir)"
