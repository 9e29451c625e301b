#!/usr/bin/env bash
# Install build and test dependencies on Debian 12 (run as root; idempotent).
#
#   scripts/install-deps.sh [--with-kafka]
#
#   --with-kafka  also a JRE + Maven and the Kafka broker jars
#                 (scripts/kafka/fetch.sh -> .cache/kafka/lib) for the
#                 real-broker tests.
# Quiet on success; on failure prints the failing step's output and exits 1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
with_kafka=0
for a in "$@"; do
  case "$a" in
    --with-kafka) with_kafka=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown option $a" >&2; exit 1 ;;
  esac
done

log=$(mktemp); trap 'rm -f "$log"' EXIT
run() {  # run quietly; show everything if it fails
  local what=$1; shift
  if ! "$@" >"$log" 2>&1; then
    echo "install-deps.sh: FAILED: $what" >&2
    echo "  command: $*" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
}
sudo=""
if [[ $EUID -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: run as root" >&2; exit 1; }
  sudo="sudo"
fi

pkgs=(build-essential cmake pkg-config
      librdkafka-dev libavro-dev librocksdb-dev libroaring-dev
      libcmocka-dev libjansson-dev libxxhash-dev
      python3 python3-pip)
(( with_kafka )) && pkgs+=(openjdk-17-jre-headless maven)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "install-deps.sh: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run "apt-get update" $sudo apt-get update -qq
  run "apt-get install" $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python packages for whatever python3 is first on PATH.
py=python3
pipargs=(-m pip install -q --disable-pip-version-check -r "$root/tests/requirements.txt")
if ! $py "${pipargs[@]}" >"$log" 2>&1; then
  if grep -q externally-managed-environment "$log"; then
    run "pip install (--break-system-packages)" $py "${pipargs[@]}" --break-system-packages
  else
    echo "install-deps.sh: FAILED: pip install -r tests/requirements.txt" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
fi
run "python imports" $py -c 'import pytest, confluent_kafka, fastavro'

if (( with_kafka )); then
  run "kafka jars (scripts/kafka/fetch.sh)" "$root/scripts/kafka/fetch.sh"
fi
echo "install-deps.sh: ok"
