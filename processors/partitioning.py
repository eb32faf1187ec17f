"""Which partition a company lives on: Kafka's default (murmur2) partitioner, so Java clients agree."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2  # the same hash as kafka-python's; aiokafka is loaded anyway


@lru_cache(maxsize=65_536)  # companies are few and murmur2 is pure Python: hash each once
def partition_of(company_id: str, partitions: int) -> int:
    return (murmur2(company_id.encode()) & 0x7FFFFFFF) % partitions
