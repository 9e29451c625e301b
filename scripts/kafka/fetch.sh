#!/usr/bin/env bash
# Download the Kafka broker jars (+ log4j2 binding) from Maven Central into
# .cache/kafka/lib. Idempotent: does nothing when that version is already there.
#   KAFKA_VERSION=4.1.1 scripts/kafka/fetch.sh      (default: the pom's version)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dest="${KAFKA_LIB:-$root/.cache/kafka/lib}"
default_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
version="${KAFKA_VERSION:-$default_version}"
stamp="$dest/.kafka-version"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$version" ]] \
   && compgen -G "$dest/kafka_2.13-$version.jar" >/dev/null; then
  exit 0
fi
command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (scripts/install-deps.sh --with-kafka)" >&2; exit 1; }

rm -rf "$dest"
mkdir -p "$dest"
log=$(mktemp)
if ! mvn -q -B -f "$here/pom.xml" -Dkafka.version="$version" \
      dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$dest" >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"
  echo "fetch.sh: FAILED to fetch kafka_2.13 $version" >&2
  exit 1
fi
rm -f "$log"
[[ -f "$dest/kafka_2.13-$version.jar" ]] || { echo "fetch.sh: kafka_2.13-$version.jar missing after fetch" >&2; exit 1; }
echo "$version" > "$stamp"
echo "fetch.sh: kafka $version -> $dest ($(ls "$dest"/*.jar | wc -l) jars)"
