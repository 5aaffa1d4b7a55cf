"""Counting store operations, for the round-trips measurement.

* :func:`counting_store` wraps a sessionware store class so every store
  operation (one round trip each) is counted in-process; the benchmark apps
  expose the counts at ``/__stats``.
* :class:`RespProxy` is a TCP proxy in front of valkey-server that parses the
  RESP stream from the clients and counts top-level commands by name. It sees
  what the server sees, for every peer alike (sessionware, starsessions,
  Flask-Session), and needs no cooperation from the library under test.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
from typing import Any

OPS = ("acquire", "commit", "release", "renew", "read", "create", "delete", "wait")
COUNTS: collections.Counter[str] = collections.Counter()


def sessionware_store(kind: str, *, sync: bool = False, lean: bool = True,
                      **options: Any) -> Any:
    """The store a sessionware benchmark app uses, counted: ``sqlite`` at
    ``$BENCH_SQLITE``, ``redis`` at ``$BENCH_REDIS_URL``, ``postgres`` at
    ``$BENCH_POSTGRES_DSN``, ``azure`` at ``$BENCH_AZURE`` (a connection
    string), ``mongodb`` at ``$BENCH_MONGODB_URL`` or ``dynamodb`` at
    ``$BENCH_DYNAMODB_ENDPOINT``, ``ravendb`` at ``$BENCH_RAVENDB`` (``URL/DATABASE``);
    its sync face (for the WSGI apps) with ``sync``;
    RedisStore and PostgresStore on their drivers' own path with ``lean=False``;
    ``options``: more of the store's keyword options."""
    from sessionware import stores

    name = {"sqlite": "SQLiteStore", "redis": "RedisStore", "postgres": "PostgresStore",
            "azure": "AzureTableStore", "mongodb": "MongoDBStore",
            "dynamodb": "DynamoDBStore", "ravendb": "RavenDBStore"}[kind]
    cls = getattr(stores, f"Sync{name}" if sync else name)
    if kind == "dynamodb":  # DynamoDB Local at $BENCH_DYNAMODB_ENDPOINT: any credentials
        return counting_store(cls)(
            endpoint_url=os.environ["BENCH_DYNAMODB_ENDPOINT"], region_name="us-east-1",
            aws_access_key_id="bench", aws_secret_access_key="bench")
    if kind == "ravendb":
        url, _, database = os.environ["BENCH_RAVENDB"].rpartition("/")
        return counting_store(cls)(url, database)
    where = os.environ[{"sqlite": "BENCH_SQLITE", "redis": "BENCH_REDIS_URL",
                        "postgres": "BENCH_POSTGRES_DSN", "azure": "BENCH_AZURE",
                        "mongodb": "BENCH_MONGODB_URL"}[kind]]
    if not lean:
        options["lean"] = False
    return counting_store(cls)(where, **options)


def counting_store(cls: type) -> type:
    """A subclass of the store class ``cls`` (either face) that counts each
    operation in COUNTS."""
    from sessionware.stores import SyncStore

    def make(op: str) -> Any:
        async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            COUNTS[op] += 1
            return await getattr(super(sub, self), op)(*args, **kwargs)

        def counted_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
            COUNTS[op] += 1
            return getattr(super(sub, self), op)(*args, **kwargs)

        chosen = counted_sync if issubclass(cls, SyncStore) else counted
        chosen.__name__ = op
        return chosen

    sub = type(f"Counting{cls.__name__}", (cls,), {op: make(op) for op in OPS})
    return sub


class _Resp:
    """Incremental RESP parser that yields top-level command names."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self.buf += data
        names: list[str] = []
        while True:
            parsed = self._one(0)
            if parsed is None:
                break
            end, name = parsed
            del self.buf[:end]
            names.append(name)
        return names

    def _line(self, pos: int) -> tuple[int, bytes] | None:
        nl = self.buf.find(b"\r\n", pos)
        return None if nl < 0 else (nl + 2, bytes(self.buf[pos:nl]))

    def _one(self, pos: int) -> tuple[int, str] | None:
        got = self._line(pos)
        if got is None:
            return None
        pos, line = got
        if not line.startswith(b"*"):  # inline command
            return pos, line.split(b" ", 1)[0].decode("latin-1").lower()
        parts: list[bytes] = []
        for _ in range(int(line[1:])):
            got = self._line(pos)
            if got is None:
                return None
            pos, head = got
            size = int(head[1:])
            if len(self.buf) < pos + size + 2:
                return None
            if len(parts) < 2:
                parts.append(bytes(self.buf[pos:pos + size]))
            pos += size + 2
        name = parts[0].decode("latin-1").lower() if parts else "?"
        if name in ("script", "client", "config") and len(parts) > 1:
            name += "|" + parts[1].decode("latin-1").lower()
        return pos, name


class RespProxy:
    """Counts the commands clients send to a Redis-protocol server.

    Runs its own event loop on a thread; ``counts()`` snapshots the counter.
    """

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.host = host
        self.port = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="resp-proxy")
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> RespProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def counts(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._counts)

    def stop(self) -> None:
        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_later(0.05, self._loop.stop)
        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._client, self.host, 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        parser = _Resp()

        async def upstream() -> None:
            while data := await reader.read(65536):
                names = parser.feed(data)
                if names:
                    with self._lock:
                        self._counts.update(names)
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            up_writer.close()
