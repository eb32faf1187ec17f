"""A TCP forwarder in front of a broker: it can cut the network path and restore it, and it can
terminate TLS.

To the clients behind it, a cut looks like a broker that stopped (open connections dropped, new ones
refused) and a restore like the same broker coming back with its data — the case of a Kafka cluster
with durable storage, which the embedded broker (memory engine) cannot show by restarting. With
``tls`` the clients speak TLS to it (the embedded broker has no working TLS listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading


class Forwarder:
    def __init__(self, upstream_port: int, port: int = 0, host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.host, self.upstream_port, self.port, self.tls = host, upstream_port, port, tls
        self.handshake_failures = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._quiet)
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self.restore()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def restore(self) -> None:
        """Listen again on the same port: the broker is back."""
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def cut(self) -> None:
        """Refuse new connections and drop the open ones: the broker is gone."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._forward, self.host, self.port, ssl=self.tls,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            target.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    def _quiet(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """A client that fails the TLS handshake is expected in tests: count it, do not print it."""
        if isinstance(context.get("exception"), ssl.SSLError):
            self.handshake_failures += 1
        else:
            loop.default_exception_handler(context)
