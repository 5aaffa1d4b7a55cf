"""RESP2 as RedisStore's lean path speaks it: commands packed, the handshake,
and the server's error replies turned into exceptions.

No I/O here: the async lean path (:mod:`sessionware.stores._resp`) and its
sync counterpart (:mod:`sessionware._sync.stores._resp`) share it, and
:func:`sessionware.stores.redis._translate` reads the same error table for
the replies redis-py leaves unclassified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from redis import exceptions as rexc

__all__ = ["ERROR_REPLIES", "Arg", "RefusedForNow", "evalsha_command", "handshake", "pack",
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


# The server's error replies, by prefix (the error code, its first word; or a
# longer prefix for an ERR reply), and the exception each is raised as.
#
# Contract: a reply that starts with a prefix listed here, followed by a space
# or nothing, is raised as that class, with the reply after its error code as
# the message (as redis-py does: MOVED's class reads the slot and address from
# it); any other reply as redis.exceptions.ResponseError, with the whole reply.
# The classes are redis-py's public ones (plus RefusedForNow), the very classes
# its own client raises for these replies, so an error is the same whichever
# path carried it. What each means for a session (StoreUnavailable or
# StoreError) is decided by _translate in sessionware/stores/redis.py, and only
# there; the comments below say what it decides.
ERROR_REPLIES: Final[Mapping[str, type[rexc.RedisError]]] = {
    # The script cache lost the script (SCRIPT FLUSH, a restart): the store
    # loads it and runs it again.
    "NOSCRIPT": rexc.NoScriptError,
    # The server refuses the command for now: StoreUnavailable.
    "LOADING": rexc.BusyLoadingError,
    "READONLY": rexc.ReadOnlyError,
    "MASTERDOWN": rexc.MasterDownError,
    "CLUSTERDOWN": rexc.ClusterDownError,
    "TRYAGAIN": rexc.TryAgainError,
    "MOVED": rexc.MovedError,
    "ASK": rexc.AskError,
    "OOM": rexc.OutOfMemoryError,
    "BUSY": RefusedForNow,
    "MISCONF": RefusedForNow,
    "ERR max number of clients reached": rexc.ConnectionError,
    # Credentials and ACL: no retry passes them, StoreError.
    "NOAUTH": rexc.AuthenticationError,
    "WRONGPASS": rexc.AuthenticationError,
    "NOPERM": rexc.NoPermissionError,
}


def reply_error(message: str) -> rexc.RedisError:
    """The exception for a server's error reply (without its ``-``), by
    :data:`ERROR_REPLIES`."""
    for prefix, error in ERROR_REPLIES.items():
        if message.startswith(prefix) and message[len(prefix):len(prefix) + 1] in ("", " "):
            code = message.split(" ", 1)[0]
            try:
                return error(message[len(code) + 1:])
            except ValueError:  # a MOVED or ASK without "slot host:port"
                break
    return rexc.ResponseError(message)
