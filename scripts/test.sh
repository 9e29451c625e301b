#!/usr/bin/env bash
# Set-up command 2: install everything (incl. Java, Maven and the Kafka jars),
# build, and run the whole test suite:
#   1. cmocka unit + mock-cluster tests (ctest), normal build
#   2. the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   3. librdkafka 2.0.2 <-> Kafka broker compatibility check
#   4. oracle self-tests and end-to-end tests against a real Kafka broker
#      (single-node KRaft on 127.0.0.1, started here, stopped at exit)
# Prints "N passed, N failed" per stage and exits non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
fail=0
stage() { echo; echo "=== $* ==="; }

stage "install dependencies"
scripts/install-deps.sh --with-kafka

stage "build (RelWithDebInfo, -Werror)"
scripts/build.sh build
stage "build (ASan + UBSan)"
scripts/build.sh build-asan -DENGAGE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug

stage "unit and mock-cluster tests"
ctest --test-dir build --output-on-failure -j2 || fail=1
stage "unit and mock-cluster tests under ASan/UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j2 || fail=1

stage "demo smoke run (mock cluster)"
if build/engage demo --json > .cache/demo.jsonl 2> .cache/demo.err && [ -s .cache/demo.jsonl ]; then
  echo "demo: $(wc -l < .cache/demo.jsonl) days"
else
  echo "demo FAILED"; cat .cache/demo.err; fail=1
fi

stage "real Kafka broker"
port=${ENGAGE_TEST_KAFKA_PORT:-19092}
datadir="$root/.cache/kafka/test-$port"
scripts/kafka/start.sh --fresh "$port" "$datadir"
trap 'scripts/kafka/stop.sh "$datadir" >/dev/null 2>&1 || true' EXIT
export ENGAGE_BOOTSTRAP="127.0.0.1:$port" ENGAGE_BIN="$root/build/engage" \
       ENGAGE_KAFKA_DATADIR="$datadir" ENGAGE_KAFKA_PORT="$port"

stage "librdkafka compatibility"
tests/compat/run.sh "$ENGAGE_BOOTSTRAP" || fail=1

stage "oracle self-tests and end-to-end tests (pytest)"
python3 -m pytest -q -p no:cacheprovider tests/repo tests/oracle tests/mock tests/e2e || fail=1

echo
if (( fail )); then echo "test.sh: FAILED"; exit 1; fi
echo "test.sh: all stages passed"
