"""Small Kafka helpers of the harness (confluent-kafka's AdminClient)."""
from __future__ import annotations

import time
from typing import Dict

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap: str, topic: str, partitions: int, config: Dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                       config=config)])
    for f in fs.values():
        f.result(60)
    deadline = time.time() + 30
    while time.time() < deadline:
        md = admin.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t and not t.error and len(t.partitions) == partitions:
            return
        time.sleep(0.2)
    raise RuntimeError(f"topic {topic} not ready")


def end_offsets(bootstrap: str, topic: str) -> Dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets",
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        out = {}
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            out[p] = hi
        return out
    finally:
        c.close()
