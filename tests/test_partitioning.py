"""Company → partition is Kafka's default partitioner (Java clients put a key on the same partition), and the
child processes' parts do not load kafka-python (only the parent creates topics and replays with it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aisignals.children import ENGINES_IMPORTS, SINK_IMPORTS
from processors.partitioning import partition_of
from tests.conftest import ROOT

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: Utils.murmur2(key) as a signed Java int
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 4, 7, 64])
def test_partition_of_is_the_java_default_partitioner(partitions):
    for key, java_hash in JAVA_MURMUR2.items():
        # DefaultPartitioner / BuiltInPartitioner: Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions
        assert partition_of(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("imports", [ENGINES_IMPORTS, SINK_IMPORTS], ids=["engines", "sink"])
def test_a_child_part_does_not_load_kafka_python(imports):
    code = f"import sys, aisignals.children\nfor m in {list(imports)!r}: __import__(m)\nprint('kafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
