"""What RedisStore's two faces share, with no I/O: RESP2 as the lean path speaks it
(commands packed, the handshake, the server's error replies turned into redis-py's
exceptions), what those exceptions say of an operation, and the store's conversions
of times, keys and replies.

The async lean path (:mod:`sessionware._async.io.redis_pipe`), its sync counterpart
(:mod:`sessionware._sync.io.redis_pipe`) and both faces of the store use it; the
store's error table (``ERRORS`` in :mod:`sessionware._async.stores.redis`) classifies
the replies redis-py leaves unclassified by the same rule as the lean path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from redis import exceptions as rexc
from redis.connection import DefaultParser, parse_url

from sessionware.stores.answers import Record

try:  # redis-py >= 7
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

__all__ = ["MARKER_SUFFIX", "NOTIFY_FIX", "NOTIFY_SETTING", "REFUSED_FOR_NOW", "UNAVAILABLE",
           "Arg", "RefusedForNow", "connection_refused", "evalsha_command", "glob_escaped",
           "handshake", "lean_address", "ms", "ms_or_empty", "nodes", "notify_flags", "pack",
           "pool_options", "primaries", "reclassified", "record", "records", "refused_by_server",
           "reply_error", "sends_expiries", "store_key", "where"]

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


def reclassified(exc: BaseException) -> BaseException:
    """A reply redis-py raises as a plain ResponseError (one it has no class
    for: BUSY, MISCONF), classified as the lean path classifies it."""
    return reply_error(str(exc)) if type(exc) is rexc.ResponseError else exc


# The driver errors that say the store is out of reach for now.
UNAVAILABLE: Final[tuple[type[BaseException], ...]] = (
    rexc.ConnectionError,  # broken, refused, too many clients; LOADING (BusyLoadingError)
    rexc.TimeoutError,
    rexc.ReadOnlyError,  # READONLY: a replica after failover
    rexc.ClusterError,  # CLUSTERDOWN, MASTERDOWN
    rexc.AskError,  # ASK and MOVED: redirections that did not settle
    rexc.TryAgainError,
    rexc.RedisClusterException,  # SlotNotCoveredError, topology failures
    rexc.OutOfMemoryError,  # OOM: writes refused until expiries free memory
    RefusedForNow,  # BUSY, MISCONF
    OSError,
    TimeoutError,
)


def connection_refused(exc: BaseException) -> bool:
    """Whether the connection was refused: then the command was never sent.
    (Any other connection error may have come after the command left.)"""
    cause = exc.__cause__ or exc.__context__
    return isinstance(exc, ConnectionRefusedError) or isinstance(cause, ConnectionRefusedError)


def refused_by_server(error: BaseException) -> bool:
    """Whether ``error`` is the server's reply refusing the command (READONLY,
    OOM, BUSY, LOADING, CLUSTERDOWN, MOVED, ...): then nothing was applied. A
    script is refused before its first write or not at all (Redis checks
    OOM, READONLY and MISCONF at a script's first write and lets it finish
    once it wrote), and the scripts read before they write."""
    return isinstance(error, (rexc.ResponseError, rexc.BusyLoadingError))


def pool_options() -> dict[str, Any]:
    """The options of the store's own pool to a single server. redis-py 8.1 skips
    its stale-connection check at checkout while maintenance notifications are
    "auto", so after a server restart every pooled connection would fail once
    (RESP2 has no maintenance notifications anyway)."""
    if MaintNotificationsConfig is None:
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def lean_address(url: str) -> dict[str, Any] | None:
    """The lean path's ``host``, ``port``, ``db``, ``username`` and ``password``
    for a plain ``redis://`` URL (TCP, optional user, password and db);
    ``None`` for TLS, unix sockets and URLs with other options."""
    if not url.startswith("redis://"):
        return None
    options: dict[str, Any] = dict(parse_url(url))  # type: ignore[no-untyped-call,unused-ignore]
    address = {"host": str(options.pop("host", "localhost")),
               "port": int(options.pop("port", 6379)), "db": int(options.pop("db", 0)),
               "username": options.pop("username", None),
               "password": options.pop("password", None)}
    return None if options else address


def ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounded up so a duration never shrinks."""
    return max(1, math.ceil(seconds * 1000))


def ms_or_empty(seconds: float | None) -> int | str:
    return "" if seconds is None else ms(seconds)


def record(key: str, data: bytes, expires_ms: bytes, locked_ms: bytes,
           created_ms: bytes, granted_ms: bytes) -> Record:
    """A record from its hash fields ``d e l c g`` (server ms; ``l`` and ``g``
    are 0 when unlocked)."""
    locked = int(locked_ms)
    return Record(key, bytes(data), int(expires_ms) / 1000, locked / 1000 if locked else None,
                  int(created_ms) / 1000, int(granted_ms) / 1000 if locked else None)


def records(prefix: str, rkeys: Sequence[bytes], replies: Sequence[Any]) -> list[Record]:
    """The records of ``HMGET <prefix>{<key>} d e l c g`` replies; none for a key gone."""
    start = len(prefix) + 1
    return [record(rkey.decode()[start:-1], *fields)
            for rkey, fields in zip(rkeys, replies, strict=True) if fields[0] is not None]


MARKER_SUFFIX = ":x"  # <prefix>{<key>}:x, a record's marker (see _redis_scripts)


def store_key(prefix: str, rkey: bytes) -> str | None:
    """The store key of the record at Redis key ``rkey``; ``None`` for any
    other key (another prefix's, a marker)."""
    text = rkey.decode(errors="replace")
    head = prefix + "{"
    if not text.startswith(head) or not text.endswith("}") or len(text) == len(head):
        return None
    return text[len(head):-1]


def glob_escaped(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def primaries(slots: Sequence[Any]) -> set[str]:
    """The ``host:port`` of each primary in a CLUSTER SLOTS reply (entries
    ``[start, end, [host, port, id], replicas...]``), as redis-py names nodes."""
    return {f"{_as_text(entry[2][0])}:{int(entry[2][1])}" for entry in slots}


def _as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


NOTIFY_SETTING = "notify-keyspace-events"
NOTIFY_FIX = "notify-keyspace-events with E and x, e.g. CONFIG SET notify-keyspace-events Ex"


def sends_expiries(flags: str) -> bool:
    """Whether a ``notify-keyspace-events`` value publishes expiries on the
    ``__keyevent@*__`` channels: ``E`` (key-event channels) and ``x`` (or
    ``A``, which includes it)."""
    return "E" in flags and ("x" in flags or "A" in flags)


def notify_flags(reply: Mapping[Any, Any]) -> str:
    """The value in a ``CONFIG GET notify-keyspace-events`` reply (bytes keys
    and values: the store's clients do not decode)."""
    return _as_text(reply.get(NOTIFY_SETTING.encode(), reply.get(NOTIFY_SETTING, b"")))


def where(client: Any) -> str:
    """The server (or a cluster's first nodes) a client of either face talks to,
    for messages (never a password)."""
    if hasattr(client, "nodes_manager"):
        return ",".join(client.nodes_manager.startup_nodes) or "a cluster"
    options = client.connection_pool.connection_kwargs
    if "path" in options:
        return str(options["path"])
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{options.get('db', 0)}"


def nodes(cluster: Any, every_primary: bool) -> list[Any]:
    """A cluster client's primaries, or any one node, as its topology last read."""
    return list(cluster.get_primaries()) if every_primary else [cluster.get_random_node()]
