"""Which partition a company lives on: Kafka's default (murmur2) partitioner, so Java clients agree."""

from __future__ import annotations

from kafka.partitioner.default import murmur2


def partition_of(company_id: str, partitions: int) -> int:
    return (murmur2(company_id.encode()) & 0x7FFFFFFF) % partitions
