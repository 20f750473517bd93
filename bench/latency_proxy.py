"""A loopback TCP proxy that makes an object store on 127.0.0.1 answer as slowly as one across a network:
every request waits ``--delay-ms`` before its first bytes go on to the store.

Used by ``bench.scaling`` between the workers and the stack's S3 emulator, so that the work of a backup
or restore is bound by round trips, as it is against a cloud store, rather than by a loopback store that
answers in a fraction of a millisecond. It runs as a process of its own (its CPU time is measured apart
from the workers') and forwards bytes as they are: nothing is parsed, so TLS or any HTTP version passes.

A request is recognised without parsing HTTP: on each connection, the first bytes from the client after
the connection opened or after the store last sent something begin a request. That is one delay per
request on a keep-alive connection, and one more for a request body sent after ``100 Continue`` (a real
round trip costs that too). Connecting itself is not delayed.

``python -m bench.latency_proxy --upstream http://127.0.0.1:PORT --port P --delay-ms 20``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

#: Bytes read from a socket at once.
_READ_SIZE = 1 << 16
#: How often the statistics file is written (when something changed).
STATS_SECONDS = 1.0


class LatencyProxy:
    def __init__(self, upstream_host: str, upstream_port: int, delay_seconds: float) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.delay_seconds = delay_seconds
        #: Requests delayed and connections accepted since the start.
        self.requests = 0
        self.connections = 0

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            store_reader, store_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            client_writer.close()
            return
        # True while the next bytes from the client begin a new request.
        request_starts = True

        async def client_to_store() -> None:
            nonlocal request_starts
            while data := await client_reader.read(_READ_SIZE):
                if request_starts:
                    request_starts = False
                    self.requests += 1
                    await asyncio.sleep(self.delay_seconds)
                store_writer.write(data)
                await store_writer.drain()
            if store_writer.can_write_eof():
                store_writer.write_eof()

        async def store_to_client() -> None:
            nonlocal request_starts
            while data := await store_reader.read(_READ_SIZE):
                request_starts = True
                client_writer.write(data)
                await client_writer.drain()
            if client_writer.can_write_eof():
                client_writer.write_eof()

        pumps = [asyncio.ensure_future(client_to_store()), asyncio.ensure_future(store_to_client())]
        try:
            # Both directions end on EOF; an error in one (a side reset its connection) ends the other.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (store_writer, client_writer):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    def stats(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "connections": self.connections,
            "delay_ms": round(self.delay_seconds * 1000, 3),
        }


async def serve(proxy: LatencyProxy, port: int, stats_file: Path | None) -> None:
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    written: dict[str, float | int] = {}
    async with server:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), STATS_SECONDS)
            current = proxy.stats()
            if stats_file is not None and current != written:
                temporary = stats_file.with_suffix(".tmp")
                temporary.write_text(json.dumps({**current, "time": time.time()}))
                temporary.replace(stats_file)  # a reader never sees half a file
                written = current


def read_stats(stats_file: Path) -> dict[str, float | int]:
    """What a proxy started with ``--stats-file`` last wrote (empty before its first request)."""
    try:
        data: dict[str, float | int] = json.loads(stats_file.read_text())
    except (OSError, ValueError):
        return {}
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the store")
    parser.add_argument("--port", type=int, required=True, help="port to listen on, on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay per request (default 20)")
    parser.add_argument("--stats-file", type=Path, help="JSON file the request count is written to")
    args = parser.parse_args(argv)
    parts = urlsplit(args.upstream)
    if not parts.hostname or parts.port is None:
        parser.error(f"--upstream must be scheme://host:port, not {args.upstream!r}")
    proxy = LatencyProxy(parts.hostname, parts.port, args.delay_ms / 1000)
    asyncio.run(serve(proxy, args.port, args.stats_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
