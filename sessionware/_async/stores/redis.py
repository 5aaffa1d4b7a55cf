"""RedisStore: sessions in Redis or Valkey, single server or Redis Cluster.
Install with ``pip install sessionware[redis]`` (redis-py with hiredis).
Design, the lean path, wake-ups, expiry events and failures:
docs/stores/redis.md.

Keys: one hash per session at ``<prefix>{<key>}`` (default prefix
``sessionware:``; ``<key>``, a hash of the session id, is the hash tag, so a
session's keys share one cluster slot). Fields (see
:mod:`sessionware.stores._redis_scripts`), times in the server's ms:
``d`` data, ``t`` fencing token, ``l`` lease deadline (0: unlocked), ``e``
idle deadline (the key's ``PEXPIREAT``), ``a`` absolute deadline (0: none),
``w`` a waiter asked to be woken, ``c`` creation time, ``g`` when the current
lease was granted (0: unlocked). A bookkeeping record (data beginning with
NUL) also has a marker, ``<prefix>{<key>}:x``, which outlives it and keeps
expiry watchers silent; a watcher's claim on an expired session is the same
key. Wake-ups go on one pub/sub channel, ``<prefix>wake``.

Operations, each one ``EVALSHA`` of a script of
:mod:`sessionware.stores._redis_scripts` (over the lean path,
:mod:`sessionware._async.io.redis_pipe`, with a plain ``redis://`` URL; through
redis-py's client otherwise):

* ``acquire``: ACQUIRE takes the lease, or sets ``w`` and answers the time left.
* ``commit``, ``release``, ``renew``, ``delete``: the fenced script of that
  name (COMMIT, RELEASE and DELETE publish on the channel when ``w`` is set).
* ``read``: READ, which slides the expiry when due.
* ``create``: CREATE, unless the key exists.
* ``discard``: DISCARD; ``inspect``: INSPECT.
* ``scan``: ``SCAN`` of the prefix (on every primary of a cluster), one
  pipelined ``HMGET`` per batch.
* ``purge_expired``: nothing to do (Redis removes expired keys itself): 0.
* ``wait``: woken by a release in this process, or by a message on the
  channel to the store's one subscriber (:mod:`sessionware._async.stores._listener`).
* ``watch_expired``: the same subscriber on ``__keyevent@<db>__:expired``;
  CLAIM on the marker lets one process report each expiry.

ACL of a minimal user (on a cluster also ``+cluster|slots +cluster|shards
+command``)::

    ACL SETUSER sessions on >secret ~sessionware:* &sessionware:wake
        +evalsha +script|load +subscribe +ping +client|setinfo
        +time +hget +hmget +hset +hdel +exists +del +pexpireat +publish +set +scan
        &__keyevent@*__:expired +config|get
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Self, Union

from sessionware._async.io.primitives import IS_SYNC
from sessionware._async.stores._listener import LISTEN_TICK, Run, WakeupListener
from sessionware._async.stores.base import SCAN_BATCH, Lease, Locked, Record, Store
from sessionware.exceptions import ConfigurationError, StoreError, StoreUnavailable
from sessionware.stores import _redis_scripts as scripts
from sessionware.stores._errors import ErrorTable, Meaning, Row, described, lease_lost

try:
    import redis.asyncio as driver
    from redis import exceptions as rexc
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from sessionware.stores._redis_protocol import (
        RefusedForNow,
        evalsha_command,
        pack,
        reply_error,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "RedisStore needs redis-py: pip install sessionware[redis]"
    ) from exc

try:  # redis-py >= 7
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

try:  # the lean path needs hiredis's parser (the [redis] extra brings it)
    from sessionware._async.io.redis_pipe import LeanPath
except ImportError:  # pragma: no cover - redis-py without hiredis
    LeanPath = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub
    from redis.commands.core import AsyncScript

    from sessionware.urls import StoreURL

__all__ = ["RedisStore"]

logger = logging.getLogger(__name__)

Client = Union["driver.Redis", "RedisCluster"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "sessionware:"

_TOPOLOGY_CHECK = 30.0  # how often a cluster's expiry watcher looks for new primaries
_MARKER_SUFFIX = ":x"  # <prefix>{<key>}:x, a record's marker (see _redis_scripts)

# The driver errors that say the store is out of reach for now.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
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


def _connection_refused(exc: BaseException) -> bool:
    """Whether the connection was refused: then the command was never sent.
    (Any other connection error may have come after the command left.)"""
    cause = exc.__cause__ or exc.__context__
    return isinstance(exc, ConnectionRefusedError) or isinstance(cause, ConnectionRefusedError)


def _refused_by_server(error: BaseException) -> bool:
    """Whether ``error`` is the server's reply refusing the command (READONLY,
    OOM, BUSY, LOADING, CLUSTERDOWN, MOVED, ...): then nothing was applied. A
    script is refused before its first write or not at all (Redis checks
    OOM, READONLY and MISCONF at a script's first write and lets it finish
    once it wrote), and the scripts read before they write."""
    return isinstance(error, (rexc.ResponseError, rexc.BusyLoadingError))


def _reclassified(exc: BaseException) -> BaseException:
    """A reply redis-py raises as a plain ResponseError (one it has no class
    for: BUSY, MISCONF), classified as the lean path classifies it."""
    return reply_error(str(exc)) if type(exc) is rexc.ResponseError else exc


# What redis-py's errors mean, first match decides. Wrong credentials are a
# connection error that no retry passes.
ERRORS = ErrorTable("Redis", [
    Row(rexc.AuthenticationError, Meaning.ERROR),
    Row(_UNAVAILABLE, Meaning.NOT_APPLIED, when=_connection_refused,
        hint=" (connection refused: no server listens there)"),
    Row(_UNAVAILABLE, Meaning.NOT_APPLIED, when=_refused_by_server),
    Row(_UNAVAILABLE, Meaning.MAYBE_APPLIED),
    Row(rexc.RedisError, Meaning.ERROR),
], reclassify=_reclassified)


def _where(client: Client) -> str:
    """The server (or a cluster's first nodes) a client talks to, for
    messages (never a password)."""
    if isinstance(client, RedisCluster):
        return ",".join(client.nodes_manager.startup_nodes) or "a cluster"
    options = client.connection_pool.connection_kwargs
    if "path" in options:
        return str(options["path"])
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{options.get('db', 0)}"


def _record(key: str, data: bytes, expires_ms: bytes, locked_ms: bytes,
            created_ms: bytes, granted_ms: bytes) -> Record:
    """A record from its hash fields ``d e l c g`` (server ms; ``l`` and ``g``
    are 0 when unlocked)."""
    locked = int(locked_ms)
    return Record(key, bytes(data), int(expires_ms) / 1000, locked / 1000 if locked else None,
                  int(created_ms) / 1000, int(granted_ms) / 1000 if locked else None)


def _glob_escaped(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounded up so a duration never shrinks."""
    return max(1, math.ceil(seconds * 1000))


def _ms_or_empty(seconds: float | None) -> int | str:
    return "" if seconds is None else _ms(seconds)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _checked_client(store: str, client: object) -> Client:
    """``client``, if this face of the store can use it."""
    if not isinstance(client, (driver.Redis, RedisCluster)):
        face = driver.__name__  # redis.asyncio here, redis in the sync twin
        kind = f"{type(client).__module__}.{type(client).__qualname__}"
        raise ConfigurationError(
            f"{store} needs a {face}.Redis or RedisCluster client, not a {kind}: "
            f"pass {store}(client={face}.Redis(...))")
    if isinstance(client, RedisCluster):
        decodes = client.get_encoder().decode_responses  # type: ignore[no-untyped-call,unused-ignore]
    else:
        decodes = client.connection_pool.connection_kwargs.get("decode_responses", False)
    if decodes:
        raise ConfigurationError(f"{store} needs a client with decode_responses=False")
    return client


def _lean_path(url: str, socket_timeout: float | None) -> LeanPath | None:
    """The lean path for a plain ``redis://`` URL (TCP, optional user, password
    and db), if hiredis is installed; ``None`` (redis-py for every command) for
    TLS, unix sockets and URLs with other options."""
    if LeanPath is None or not url.startswith("redis://"):
        return None
    options: dict[str, Any] = dict(parse_url(url))  # type: ignore[no-untyped-call,unused-ignore]
    host, port = str(options.pop("host", "localhost")), int(options.pop("port", 6379))
    db = int(options.pop("db", 0))
    username, password = options.pop("username", None), options.pop("password", None)
    if options:
        return None
    return LeanPath(host, port, db=db, username=username, password=password,
                    timeout=socket_timeout)


class RedisStore(Store):
    """Sessions in Redis (or Valkey), single server or cluster.

    :param url: a ``redis://`` or ``rediss://`` URL, used when no ``client``
        is given.
    :param client: a ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``
        created with ``decode_responses=False``; the store does not close it.
        (For WSGI, the blocking face takes a ``redis.Redis`` or
        ``redis.RedisCluster``: pass that store a client of its own.)
    :param cluster: with ``url``, connect with ``RedisCluster`` (the URL names
        any one node).
    :param prefix: prepended to every key and to the wake-up channel; must not
        contain braces (the session key is the hash tag).
    :param socket_timeout: seconds before a stalled command raises
        :class:`~sessionware.StoreUnavailable` (clients built from ``url``).
    :param max_connections: connections per process in redis-py's pool to a
        single server; when all are busy an operation waits for one (up to
        ``socket_timeout``) rather than failing, so a burst is slowed down, not
        refused. On the lean path the pool serves only set-up and the wake-up
        subscriber.
    :param lean: send the session operations over the lean path (see "The
        lean command path" in the store's docs) where the URL allows it: the
        default. ``False`` sends everything through redis-py's client (the
        same commands, more CPU per request): for a driver-level feature the
        lean path lacks, or to rule it out when chasing a problem.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        client: Client | None = None,
        cluster: bool = False,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float | None = 5.0,
        max_connections: int = 100,
        lean: bool = True,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(f"prefix {prefix!r} must not contain braces")
        self._owns_client = client is None
        self._lean: LeanPath | None = None
        if client is None:
            client = self._connect(url, cluster, socket_timeout, max_connections)
            if lean and not cluster:
                self._lean = _lean_path(url, socket_timeout)
        else:
            client = _checked_client(type(self).__name__, client)
        self._client: Client = client
        self._where = _where(client)
        self._prefix = prefix
        self._channel = f"{prefix}wake"
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._commit = client.register_script(scripts.COMMIT)
        self._release = client.register_script(scripts.RELEASE)
        self._renew = client.register_script(scripts.RENEW)
        self._read = client.register_script(scripts.READ)
        self._create = client.register_script(scripts.CREATE)
        self._delete = client.register_script(scripts.DELETE)
        self._discard = client.register_script(scripts.DISCARD)
        self._inspect = client.register_script(scripts.INSPECT)
        self._claim = client.register_script(scripts.CLAIM)
        self._wakeups = _Wakeups(self._subscription, self._channel)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        options, driver_url = url.split(cls, _driver_url_options())
        if url.scheme.endswith("+cluster"):
            options.setdefault("cluster", True)
            driver_url = url.scheme.removesuffix("+cluster") + driver_url[len(url.scheme):]
        return cls(driver_url, **options)

    @staticmethod
    def _connect(url: str, cluster: bool, socket_timeout: float | None,
                 max_connections: int) -> Client:
        options: dict[str, Any] = {
            "retry": _no_retry(),
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
        }
        try:
            if cluster:
                return RedisCluster.from_url(url, **options)
            if MaintNotificationsConfig is not None:
                # redis-py 8.1 skips its stale-connection check at checkout while
                # maintenance notifications are "auto" (truthy), so after a server
                # restart every pooled connection would fail once. RESP2 has no
                # maintenance notifications anyway.
                options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
            # redis-py's default pool raises MaxConnectionsError past its limit;
            # a blocking pool queues the excess instead.
            pool = driver.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=socket_timeout, **options)
            return driver.Redis.from_pool(pool)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {url!r}: {exc}") from exc

    def _key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    def _keys(self, key: str, marked: bool) -> list[str]:
        """A script's KEYS: the record's hash, and its marker if ``marked``."""
        rkey = self._key(key)
        return [rkey, rkey + _MARKER_SUFFIX] if marked else [rkey]

    def _store_key(self, rkey: bytes) -> str | None:
        """The store key of the record at Redis key ``rkey``; ``None`` for any
        other key (another prefix's, a marker)."""
        text = rkey.decode(errors="replace")
        head = self._prefix + "{"
        if not text.startswith(head) or not text.endswith("}") or len(text) == len(head):
            return None
        return text[len(head):-1]

    async def _run(self, op: str, script: AsyncScript, key: str,
                   args: Sequence[str | int | bytes], *, idempotent: bool = False,
                   marked: bool = False) -> Any:
        """Run one script, translating errors; retry once only if ``idempotent``.
        ``marked``: the script takes the record's marker as KEYS[2]."""
        keys = self._keys(key, marked)
        for attempt in range(2 if idempotent else 1):
            try:
                if self._lean is not None:
                    return await self._evalsha(self._lean, script, keys, args)
                return await script(keys=keys, args=args)
            except ERRORS.errors as exc:
                error = ERRORS.translate(op, self._where, exc)
                if attempt or not idempotent or not isinstance(error, StoreUnavailable):
                    raise error from exc
                logger.debug("retrying idempotent %s after a connection error", op)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _evalsha(lean: LeanPath, script: AsyncScript, keys: Sequence[str],
                       args: Sequence[str | int | bytes]) -> Any:
        """EVALSHA on the lean path; after a NOSCRIPT (a flushed or restarted
        server) load the script and run it again, as redis-py's Script does."""
        try:
            return await lean.execute(evalsha_command(script.sha, keys, args))
        except rexc.NoScriptError:
            source = script.script
            body = source if isinstance(source, (bytes, str)) else bytes(source)
            script.sha = (await lean.execute(pack("SCRIPT", "LOAD", body))).decode()
            return await lean.execute(evalsha_command(script.sha, keys, args))

    async def _fenced(self, op: str, script: AsyncScript, lease: Lease,
                      args: Sequence[str | int | bytes], *, marked: bool = False) -> None:
        if not await self._run(op, script, lease.key, [str(lease.token), *args], marked=marked):
            raise lease_lost(lease)

    # -- lifecycle ------------------------------------------------------------

    async def setup(self) -> None:
        """Load the scripts (on every primary of a cluster). Idempotent."""
        for script in (self._acquire, self._commit, self._release, self._renew,
                       self._read, self._create, self._delete, self._discard, self._inspect,
                       self._claim):
            with ERRORS.mapped("setup", self._where):
                script.sha = await self._client.script_load(script.script)

    async def aclose(self) -> None:
        """Stop the subscriber (wake-ups and expiry watching) and close the
        connections the store opened (not a client passed in)."""
        await self._wakeups.aclose()
        if self._lean is not None:
            self._lean.close()
        if self._owns_client:
            with contextlib.suppress(*ERRORS.errors):
                await self._client.aclose()

    # -- operations -----------------------------------------------------------

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        reply = await self._run("acquire", self._acquire, key, [_ms(lease_ttl)])
        if reply is None:
            return None
        if reply[0] == 0:
            return Locked(reply[1] / 1000)
        return Lease(key, int(reply[1]), bytes(reply[2]))

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        await self._fenced("commit", self._commit, lease, [data, _ms(ttl), self._channel],
                          marked=True)

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self._fenced("release", self._release, lease,
                           [_ms_or_empty(ttl), _ms(refresh_after), self._channel], marked=True)

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._fenced("renew", self._renew, lease, [_ms(lease_ttl)])

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        reply = await self._run("read", self._read, key,
                                [_ms_or_empty(ttl), _ms(refresh_after)], idempotent=True,
                                marked=True)
        return None if reply is None else bytes(reply)

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        args: list[bytes | int | str] = [data, _ms(ttl), _ms_or_empty(absolute_ttl)]
        return bool(await self._run("create", self._create, key, args, marked=True))

    async def delete(self, lease: Lease) -> None:
        await self._fenced("delete", self._delete, lease, [self._channel])

    async def discard(self, key: str) -> bool:
        return bool(await self._run("discard", self._discard, key, [self._channel]))

    async def inspect(self, key: str) -> Record | None:
        reply = await self._run("inspect", self._inspect, key, [], idempotent=True)
        return None if reply is None else _record(key, *reply)

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        """SCAN for the store's keys (on every primary of a cluster), then one
        pipelined HMGET per batch. SCAN may return a key twice (while Redis
        resizes its table), so a record may come twice; HMGET of a key that
        expired meanwhile answers nothing and the record is left out."""
        pattern = _glob_escaped(self._prefix) + "{*}"
        keys: list[bytes] = []
        with ERRORS.mapped("scan", self._where):
            async for rkey in self._client.scan_iter(match=pattern, count=batch_size):
                keys.append(rkey)
                if len(keys) == batch_size:
                    batch = await self._fields(keys)
                    keys = []
                    if batch:
                        yield batch
            if keys:
                batch = await self._fields(keys)
                if batch:
                    yield batch

    async def _fields(self, rkeys: list[bytes]) -> list[Record]:
        async with self._client.pipeline(transaction=False) as pipe:
            for rkey in rkeys:
                pipe.hmget(rkey, "d", "e", "l", "c", "g")
            replies = await pipe.execute()
        start = len(self._prefix) + 1  # <prefix>{<key>}
        return [_record(rkey.decode()[start:-1], *fields)
                for rkey, fields in zip(rkeys, replies, strict=True) if fields[0] is not None]

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Always 0, and ``progress`` is never called: nothing is left to
        purge. Every script that sets a session's idle deadline sets its key's
        ``PEXPIREAT`` too, so Redis deletes expired sessions itself (when
        touched, and by its active expiry cycle), and a purge here would only
        SCAN every node's keyspace to find what Redis removes anyway."""
        return 0

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self._wakeups.wait(self._key(key).encode(), timeout, attempt)

    # -- expired sessions -------------------------------------------------------

    async def watch_expired(self, report: Callable[[str], Awaitable[object]]) -> bool:
        """Report expired sessions from the server's keyspace notifications
        (``__keyevent@<db>__:expired``, on every primary of a cluster), heard
        by the store's subscriber; ``False``, with a warning, when the server
        does not send them (``notify-keyspace-events`` needs ``E`` and ``x``
        or ``A``: ``CONFIG SET notify-keyspace-events Ex``).

        Once across processes: a watcher reports an expiry only when its CLAIM
        of the record's marker succeeds (see :mod:`~sessionware.stores._redis_scripts`),
        and bookkeeping records carry their marker from the start. Best
        effort: a notification sent while no process listens (or while the
        subscriber reconnects) is lost, and so is one whose claim fails."""
        if not await self._notifications_on():
            return False
        db = 0 if isinstance(self._client, RedisCluster) else int(
            self._client.connection_pool.connection_kwargs.get("db", 0))
        channel = f"__keyevent@{db}__:expired".encode()
        self._wakeups.watch(channel, functools.partial(self._expired, report))
        return True

    async def _notifications_on(self) -> bool:
        """Whether every primary sends expiry events; ``True`` (and an INFO)
        when the server refuses CONFIG, as managed services may."""
        try:
            async with self._node_clients(every_primary=True) as clients:
                flags = [_notify_flags(await client.config_get(_NOTIFY_SETTING))
                         for client in clients]
        except rexc.ResponseError as exc:  # NOPERM, or CONFIG renamed away
            logger.info("cannot read %s (%s): watching for expired sessions anyway; the "
                        "server must send expiry events (%s)", _NOTIFY_SETTING,
                        described(exc), _NOTIFY_FIX)
            return True
        except ERRORS.errors as exc:
            raise ERRORS.translate("watch_expired", self._where, exc) from exc
        if all(_sends_expiries(flag) for flag in flags):
            return True
        logger.warning("expired sessions are not reported: the Redis server does not send "
                       "keyspace notifications for expiries (%s is %r); enable them with "
                       "`CONFIG SET notify-keyspace-events Ex` (on a managed service, its "
                       "notify-keyspace-events parameter) on every primary",
                       _NOTIFY_SETTING, ", ".join(flags))
        return False

    async def _expired(self, report: Callable[[str], Awaitable[object]], rkey: bytes) -> None:
        """One expiry notification: report it if it is one of this store's
        records and this process claims it first. Nothing raises from here:
        the subscriber goes on."""
        key = self._store_key(rkey)
        if key is None:
            return
        try:
            claimed = await self._run("claim", self._claim, key, [], marked=True)
        except StoreError as exc:
            logger.warning("the expiry of session %s… is not reported: %s", key[:12], exc)
            return
        if not claimed:
            return  # bookkeeping, or another process reported it
        try:
            await report(key)
        except Exception:
            logger.exception("reporting the expiry of session %s… failed", key[:12])

    # -- the subscriber ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _subscription(self, every_primary: bool) -> AsyncIterator[_Subscription]:
        """The subscriber's pub/sub connections: one, from the client's pool
        or to any one cluster node; with ``every_primary`` one per primary of
        a cluster (expiry events are node-local)."""
        async with self._node_clients(every_primary=every_primary) as clients:
            pubsubs: list[PubSub] = []
            try:
                for client in clients:
                    pubsubs.append(client.pubsub())  # type: ignore[no-untyped-call,unused-ignore]
                yield _Subscription(pubsubs, self._topology_check(clients[0], every_primary))
            finally:
                for pubsub in pubsubs:
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    def _topology_check(self, node: driver.Redis,
                        every_primary: bool) -> Callable[[], Awaitable[bool]] | None:
        """For connections to every primary of a cluster: a check whether the
        primaries are still the same ones (after a failover or a new shard
        the subscriber reconnects). It asks ``node`` (CLUSTER SLOTS) rather
        than refresh the cluster client, whose refresh recycles every pooled
        connection."""
        client = self._client
        if not every_primary or not isinstance(client, RedisCluster):
            return None
        before = {primary.name for primary in _nodes(client, every_primary=True)}

        async def unchanged() -> bool:
            slots = await node.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call,unused-ignore]
            return _primaries(slots) == before

        return unchanged

    @contextlib.asynccontextmanager
    async def _node_clients(self, *, every_primary: bool) -> AsyncIterator[list[driver.Redis]]:
        """Clients of single nodes: the store's own for a single server; for a
        cluster one of any one node (every node hears every PUBLISH), or, with
        ``every_primary``, one per primary, from freshly read topology."""
        client = self._client
        if not isinstance(client, RedisCluster):
            yield [client]
            return
        if IS_SYNC:  # the sync cluster client keeps a client per node
            if every_primary:
                client.nodes_manager.initialize()
            yield [client.get_redis_connection(node) for node in _nodes(client, every_primary)]
            return
        await client.initialize()
        if every_primary:
            await client.nodes_manager.initialize()
        nodes = _nodes(client, every_primary)
        owned: list[driver.Redis] = []
        try:
            for node in nodes:
                pool = driver.ConnectionPool(connection_class=node.connection_class,
                                               **node.connection_kwargs)
                owned.append(driver.Redis.from_pool(pool))
            yield owned
        finally:
            for node_client in owned:
                await node_client.aclose()


def _nodes(client: RedisCluster, every_primary: bool) -> list[Any]:
    """The cluster's primaries, or any one node, as its topology last read."""
    if every_primary:
        return list(client.get_primaries())  # type: ignore[no-untyped-call,unused-ignore]
    return [client.get_random_node()]  # type: ignore[no-untyped-call,unused-ignore]


def _primaries(slots: Sequence[Any]) -> set[str]:
    """The ``host:port`` of each primary in a CLUSTER SLOTS reply (entries
    ``[start, end, [host, port, id], replicas...]``), as redis-py names nodes."""
    return {f"{_as_text(entry[2][0])}:{int(entry[2][1])}" for entry in slots}


def _as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_NOTIFY_SETTING = "notify-keyspace-events"
_NOTIFY_FIX = "notify-keyspace-events with E and x, e.g. CONFIG SET notify-keyspace-events Ex"


def _sends_expiries(flags: str) -> bool:
    """Whether a ``notify-keyspace-events`` value publishes expiries on the
    ``__keyevent@*__`` channels: ``E`` (key-event channels) and ``x`` (or
    ``A``, which includes it)."""
    return "E" in flags and ("x" in flags or "A" in flags)


def _notify_flags(reply: Mapping[Any, Any]) -> str:
    """The value in a ``CONFIG GET notify-keyspace-events`` reply (bytes keys
    and values: the store's clients do not decode)."""
    return _as_text(reply.get(_NOTIFY_SETTING.encode(), reply.get(_NOTIFY_SETTING, b"")))


class _Subscription:
    """The subscriber's connections for one run of :meth:`_Wakeups._listen_once`:
    the wake-up channel goes on the first, expiry events on each; ``unchanged``
    (cluster expiry watching only) says whether they still reach every primary."""

    __slots__ = ("pubsubs", "unchanged")

    def __init__(self, pubsubs: list[PubSub],
                 unchanged: Callable[[], Awaitable[bool]] | None) -> None:
        self.pubsubs = pubsubs
        self.unchanged = unchanged


class _Watch:
    """Expiry watching: the key-event channel and what to do with each key heard."""

    __slots__ = ("channel", "handle")

    def __init__(self, channel: bytes, handle: Callable[[bytes], Awaitable[None]]) -> None:
        self.channel = channel
        self.handle = handle


class _Wakeups(WakeupListener[bytes]):
    """The subscriber of a store's waiters: it reads the wake-up channel and
    wakes the waiters of each message's key, and, once :meth:`watch` was
    called, hands each expired key to the watch's handler (and then starts
    at once rather than at the first wait)."""

    def __init__(self, subscription: Callable[[bool], AbstractAsyncContextManager[_Subscription]],
                 channel: str) -> None:
        super().__init__("sessionware-redis-wakeups", "subscriber")
        self._subscription = subscription
        self._channel = channel
        self._watch: _Watch | None = None

    def watch(self, channel: bytes, handle: Callable[[bytes], Awaitable[None]]) -> None:
        """Hand every key heard on ``channel`` to ``handle``, from now until
        close (a running subscriber reconnects to subscribe it)."""
        self._after_fork()
        with self._lock:
            self._watch = _Watch(channel, handle)
            self._start()

    def _forked(self) -> None:
        """A forked child does not watch expiries either: the parent that
        asked goes on watching, and reporting each once needs only one
        watcher. (The parent's connection stays the parent's; redis-py's pool
        opens new ones.)"""
        super()._forked()
        self._watch = None

    async def _listen_once(self, run: Run) -> bool:
        """Subscribe and read until stopped; return (to be called again at
        once) when a watch began or a cluster's primaries changed."""
        watch = self._watch
        try:
            async with self._subscription(watch is not None) as subscription:
                pubsubs = subscription.pubsubs
                await pubsubs[0].subscribe(self._channel)
                if watch is not None:
                    for pubsub in pubsubs:
                        await pubsub.subscribe(watch.channel)
                tick = LISTEN_TICK / len(pubsubs)
                next_check = time.monotonic() + _TOPOLOGY_CHECK
                while not run.stop.is_set() and self._watch is watch:
                    for pubsub in pubsubs:
                        message = await pubsub.get_message(timeout=tick)
                        if message is not None:
                            await self._received(message, watch)
                    if subscription.unchanged is not None and time.monotonic() > next_check:
                        if not await subscription.unchanged():
                            return True
                        next_check = time.monotonic() + _TOPOLOGY_CHECK
        finally:
            self._stopped_listening()
        return True

    async def _received(self, message: dict[str, Any], watch: _Watch | None) -> None:
        kind, channel = message["type"], message["channel"]
        if watch is not None and channel == watch.channel:
            if kind == "message":
                await watch.handle(message["data"])
        elif kind == "message":
            self.waiters.wake(message["data"])
        elif kind == "subscribe":
            self._began_listening()  # the wake-up channel's confirmation


def _driver_url_options() -> frozenset[str]:
    """What redis-py reads from a URL's query besides the store's options:
    its parsed URL arguments and its connections' keyword arguments."""
    from redis import connection

    names = set(connection.URL_QUERY_ARGUMENT_PARSERS)
    for cls in (connection.AbstractConnection, connection.Connection,
                connection.SSLConnection):
        names.update(inspect.signature(cls.__init__).parameters)
    return frozenset(names - {"self", "args", "kwargs", "host", "port", "username",
                              "password", "path"})
