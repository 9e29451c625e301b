#!/usr/bin/env bash
# engage benchmark: one command that reproduces everything (bench/README.md).
#
#   bench/run.sh [--events N] [--users U] [--days D] [--partitions P]
#                [--only PEER...] [--skip PEER...] [--smoke] [--help]
#
# Peers: operator engage-alo engage-eos duckdb spark kstreams.
# Default scale: 1M users, 35 days, 4 partitions, capped at 10M records.
# Everything generated goes to .cache/bench/ (git-ignored): events, Parquet,
# broker data, the Kafka Streams jar, results (.cache/bench/results/).
#
# Sets up .cache/bench/venv (Python venv with bench/requirements.txt, seeing
# the system site-packages for the oracle's fastavro and confluent-kafka),
# then runs bench/harness.py with the same arguments.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cache="$root/.cache/bench"
venv="$cache/venv"
mkdir -p "$cache"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "[bench] setting up $venv" >&2
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q -r "$req"
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -c 'import confluent_kafka, fastavro' 2>/dev/null || {
  echo "[bench] confluent-kafka/fastavro missing: pip install -r tests/requirements.txt (scripts/install-deps.sh)" >&2
  exit 1; }
command -v java >/dev/null || { echo "[bench] java missing: scripts/install-deps.sh --with-kafka" >&2; exit 1; }
exec "$venv/bin/python" "$here/harness.py" "$@"
