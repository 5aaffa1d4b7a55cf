"""``python -m benchmarks.uvicorn_nodelay ARGS``: uvicorn's CLI, with the
listening socket of ``--workers N`` created as IPPROTO_TCP.

uvicorn's multiprocess supervisor binds the socket with ``proto=0``; accepted
connections inherit it, and asyncio only sets TCP_NODELAY when ``proto`` is
IPPROTO_TCP. So with ``--workers 2`` Nagle stays on and every keep-alive
request after the first waits for the client's delayed ACK: ~44 ms p50 and
~700 requests/s for every app, sessions or not (uvicorn issue #3149; the fix
is uvicorn PR #3155, which this applies). Without it the two-worker rows
would measure Linux's delayed-ACK timer, not the session libraries.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.config import Config

_bind_socket = Config.bind_socket


def _bind_socket_tcp(self: Config) -> socket.socket:
    sock = _bind_socket(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
        sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    return sock


Config.bind_socket = _bind_socket_tcp  # type: ignore[method-assign]

if __name__ == "__main__":
    uvicorn.main()
