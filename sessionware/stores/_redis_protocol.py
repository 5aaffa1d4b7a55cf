"""RESP2 as RedisStore's lean path speaks it: commands packed, the handshake,
and the server's error replies turned into redis-py's exceptions.

No I/O here: the async lean path (:mod:`sessionware._async.io.redis_pipe`) and its
sync counterpart (:mod:`sessionware._sync.io.redis_pipe`) share it, and
the store's error table (``ERRORS`` in :mod:`sessionware._async.stores.redis`)
classifies the replies redis-py leaves unclassified by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from redis import exceptions as rexc
from redis.connection import DefaultParser

__all__ = ["REFUSED_FOR_NOW", "Arg", "RefusedForNow", "evalsha_command", "handshake", "pack",
           "reply_error"]

Arg = bytes | str | int


def pack(*args: Arg) -> bytes:
    """One command in RESP2: an array of bulk strings."""
    return b"*%d\r\n%b" % (len(args), _bulk(args))


def _bulk(args: Sequence[Arg]) -> bytes:
    parts = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def evalsha_command(sha: str, keys: Sequence[str], args: Sequence[Arg]) -> bytes:
    """``EVALSHA sha numkeys keys... args...``; the fixed head is formatted in
    one step (the store's scripts take one or two keys: ``numkeys`` is one digit)."""
    head = _EVALSHA_HEAD % (3 + len(keys) + len(args), sha.encode(), len(keys))
    return head + _bulk(keys) + _bulk(args)


_EVALSHA_HEAD = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n%d\r\n"


def handshake(db: int, username: str | None, password: str | None) -> list[bytes]:
    """The commands a new connection sends before any other (AUTH, SELECT)."""
    commands = []
    if password is not None:
        commands.append(pack("AUTH", *([username] if username else []), password))
    if db:
        commands.append(pack("SELECT", db))
    return commands


class RefusedForNow(rexc.ResponseError):
    """A refusal redis-py has no class for, which passes by itself: the server
    runs a script past its time limit (``BUSY``), or cannot persist and takes
    no writes until it can (``MISCONF``)."""


# The error codes redis-py raises as a plain ResponseError, though they pass
# by themselves. Every other reply is classified by redis-py's own parser
# (reply_error), so both paths raise the same class for it, whatever table the
# installed redis-py keeps. What each class means for a session
# (StoreUnavailable or StoreError) is decided by the ERRORS table of
# sessionware/_async/stores/redis.py, and only there.
REFUSED_FOR_NOW: Final[frozenset[str]] = frozenset({
    "BUSY",  # a script runs past its time limit
    "MISCONF",  # the server cannot persist and takes no writes until it can
})


def reply_error(message: str) -> rexc.RedisError:
    """The exception for a server's error reply (without its ``-``): the one
    redis-py's parser makes of it, or :class:`RefusedForNow` for the codes in
    :data:`REFUSED_FOR_NOW`."""
    try:
        error: rexc.RedisError = DefaultParser.parse_error(message)  # type: ignore[no-untyped-call,unused-ignore]
    except ValueError:  # a MOVED or ASK without "slot host:port"
        return rexc.ResponseError(message)
    if type(error) is rexc.ResponseError and message.split(" ", 1)[0] in REFUSED_FOR_NOW:
        return RefusedForNow(message)
    return error
