"""One malloc arena per process: threads that allocate do not each leave a glibc heap of their own behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from aisignals import runtime

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                                reason="glibc's arenas")

COUNT_HEAPS = textwrap.dedent("""
    import sys, threading
    from aisignals.runtime import one_malloc_arena
    limited = one_malloc_arena() if sys.argv[1] == "limit" else False
    def work():
        blocks = [bytearray(300_000) for _ in range(5)]
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    heaps = 0  # glibc maps each extra arena's heap 64 MiB-aligned, anonymous
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) == 5 and fields[1] == "rw-p" and int(fields[0].split("-")[0], 16) % (64 << 20) == 0:
            heaps += 1
    print(limited, heaps)
""")


def heaps(mode: str, env: dict | None = None) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | (env or {})
    out = subprocess.run([sys.executable, "-c", COUNT_HEAPS, mode], capture_output=True, text=True, check=True,
                         env=environment)
    limited, count = out.stdout.split()
    return limited, int(count)


def test_threads_share_the_one_arena():
    assert heaps("default")[1] >= 1  # without the limit each thread that allocates gets a heap of its own
    assert heaps("limit") == ("True", 0)


def test_the_environment_wins(monkeypatch):
    assert heaps("limit", {"MALLOC_ARENA_MAX": "4"})[0] == "False"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert runtime.one_malloc_arena() is False
