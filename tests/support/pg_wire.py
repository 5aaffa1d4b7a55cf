"""A loopback TCP proxy in front of PostgreSQL that counts round trips: the
client messages that ask the server to answer and wait (``Sync`` ends an
extended-protocol statement, ``Query`` is a simple one). What the store
really sends, whatever the driver does. A round trip that only prepares a
statement (``Parse`` and ``Sync``, no ``Execute``: psycopg's first use of a
statement on a connection) is counted apart, in ``prepares``: which of a pool's
connections a request lands on, and so whether it prepares, is up to timing."""

from __future__ import annotations

import asyncio
import struct

HOST = "127.0.0.1"
_UNTYPED = (80877103, 80877104, 80877102)  # SSLRequest, GSSENCRequest, CancelRequest
_STARTUP = 196608  # protocol 3.0


class StatementCounter:
    def __init__(self, port: int) -> None:
        self.target_port = port
        self.count = 0
        self.prepares = 0
        self.server: asyncio.Server | None = None

    @property
    def dsn(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"postgresql://postgres@{HOST}:{port}/postgres?sslmode=disable&gssencmode=disable"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, 0)

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def take(self) -> int:
        taken, self.count = self.count, 0
        return taken

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        back = asyncio.create_task(self._pipe(server_r, client_w))
        buffer, started, executes = b"", False, False
        try:
            while chunk := await client_r.read(65536):
                buffer, started, executes = self._count(buffer + chunk, started, executes)
                server_w.write(chunk)
                await server_w.drain()
        finally:
            back.cancel()
            server_w.close()
            client_w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()

    def _count(self, buffer: bytes, started: bool,
               executes: bool) -> tuple[bytes, bool, bool]:
        """Count the complete messages in ``buffer``; return the rest, and
        whether the round trip under way executes a statement yet."""
        while True:
            if not started:  # untyped: length, then a code
                if len(buffer) < 8:
                    return buffer, started, executes
                length, code = struct.unpack("!II", buffer[:8])
                if len(buffer) < length:
                    return buffer, started, executes
                buffer, started = buffer[length:], code == _STARTUP or code not in _UNTYPED
                continue
            if len(buffer) < 5:
                return buffer, started, executes
            kind, length = buffer[:1], struct.unpack("!I", buffer[1:5])[0]
            if len(buffer) < 1 + length:
                return buffer, started, executes
            if kind == b"E":
                executes = True
            elif kind == b"Q" or (kind == b"S" and executes):
                self.count += 1
                executes = False
            elif kind == b"S":
                self.prepares += 1
            buffer = buffer[1 + length:]
