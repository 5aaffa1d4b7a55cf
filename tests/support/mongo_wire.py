"""A loopback TCP proxy in front of a MongoDB server that counts round trips:
the commands clients send (OP_MSG and legacy OP_QUERY), except the driver's
own handshakes and heartbeats. What the store really sends, whatever the
driver does."""

from __future__ import annotations

import asyncio
import struct

import bson

HOST = "127.0.0.1"
_OP_QUERY, _OP_MSG = 2004, 2013
# the driver's monitoring and connection set-up, not the store's commands
_DRIVER_OWN = frozenset({"hello", "ismaster", "isMaster", "ping", "endSessions",
                         "saslStart", "saslContinue"})


class CommandCounter:
    def __init__(self, port: int) -> None:
        self.target_port = port
        self.commands: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"mongodb://{HOST}:{port}/?directConnection=true"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, 0)

    async def aclose(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        back = asyncio.create_task(self._pipe(server_r, client_w))
        buffer = b""
        try:
            while chunk := await client_r.read(65536):
                buffer = self._count(buffer + chunk)
                server_w.write(chunk)
                await server_w.drain()
        except ConnectionError:
            pass
        finally:
            back.cancel()
            server_w.close()
            client_w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass

    def _count(self, buffer: bytes) -> bytes:
        """Count the complete messages in ``buffer``; return the rest."""
        while len(buffer) >= 16:
            length, _, _, opcode = struct.unpack("<iiii", buffer[:16])
            if len(buffer) < length:
                break
            message, buffer = buffer[16:length], buffer[length:]
            name = _command_name(opcode, message)
            if name is not None and name not in _DRIVER_OWN:
                self.commands.append(name)
        return buffer


def _command_name(opcode: int, message: bytes) -> str | None:
    if opcode == _OP_MSG and message[4] == 0:  # flags, then a body section
        size = struct.unpack("<i", message[5:9])[0]
        return next(iter(bson.decode(message[5:5 + size])))
    if opcode == _OP_QUERY:
        name_end = message.index(b"\0", 4)
        start = name_end + 9  # skip numberToSkip, numberToReturn
        size = struct.unpack("<i", message[start:start + 4])[0]
        return next(iter(bson.decode(message[start:start + size])))
    return None
