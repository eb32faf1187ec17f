#!/usr/bin/env bash
# Create every ai-signals topic explicitly with the partition counts the pipeline expects.
set -euo pipefail
K=/opt/kafka/bin/kafka-topics.sh
N=${PARTITIONS:-4}
P=${TOPIC_PREFIX:-aisignals}
for spec in ingest:1 events:$N facts:$N late:1 deadletters:1 indicators:$N alerts:$N; do
  name=${spec%%:*}; parts=${spec##*:}
  $K --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$P.$name" --partitions "$parts" --replication-factor 1
done
