"""RedisStore: sessions in Redis or Valkey, single server or Redis Cluster.

Install with ``pip install sessionware[redis]`` (redis-py with hiredis).

Key layout
==========

One hash per session, at ``<prefix>{<key>}`` (default prefix ``sessionware:``).
The braces make ``<key>`` the hash tag, so every key a session may ever use
lands in one slot and every script runs on Redis Cluster. Fields (see
:mod:`sessionware.stores._redis_scripts`): ``d`` data, ``t`` fencing token,
``l`` lease deadline, ``e`` idle deadline, ``a`` absolute deadline, ``w``
waiter flag. The key carries ``PEXPIREAT e`` (``e`` never passes ``a``), so
Redis itself removes expired sessions. All deadlines are the server's clock
(``TIME`` inside the scripts), never the application's.

Wake-ups go on one pub/sub channel, ``<prefix>wake``; the message is the
session's Redis key. Nothing else is created.

Commands and ACL
================

Every operation is one ``EVALSHA`` of a script from ``_redis_scripts`` (with
``SCRIPT LOAD`` at :meth:`~RedisStore.setup` and after a ``NOSCRIPT``). Inside
the scripts: ``TIME HGET HMGET HSET HDEL EXISTS DEL PEXPIREAT PUBLISH``. The
waiters' subscriber uses ``SUBSCRIBE``. A minimal ACL user::

    ACL SETUSER sessions on >secret ~sessionware:* &sessionware:wake
        +evalsha +script|load +subscribe +ping +client|setinfo
        +time +hget +hmget +hset +hdel +exists +del +pexpireat +publish

(on a cluster also ``+cluster|slots +cluster|shards +command``, which
redis-py's cluster client calls to learn the topology).

Pub/sub design
==============

Each store instance (one per process and event loop) keeps at most one
subscriber connection, started lazily at the first :meth:`~RedisStore.wait`
and shared by every local waiter: a dict maps session keys to the waiters'
futures, and a message resolves the futures of its key. Publishing is cheap
because it is rare: a waiter that finds the lock taken sets the ``w`` flag in
the same ACQUIRE script, and only a COMMIT, RELEASE or DELETE that finds the
flag publishes (and clears it). An uncontended session publishes nothing.

A waiter also re-checks after a jittered backoff (:func:`backoff_delay`, up
to ``_RECHECK_CAP`` while the subscriber is healthy, the plain polling
backoff while it is not), which covers lost messages, a subscriber that is
reconnecting, and crashed holders (whose lease lapses; the caller's timeout is
the lease's ``retry_after``). When the subscription is (re)established every
local waiter is woken to re-check, so nothing sleeps through the gap.

On Redis Cluster the channel is classic pub/sub, one channel for all
sessions, subscribed on any one node: a cluster broadcasts every ``PUBLISH``
over its bus to all nodes, so one connection per process hears every
session's wake-ups. The cost: each contended release is sent to every node and
to every subscribed process, which filter by key (work grows with nodes x
processes x contended releases; uncontended releases cost nothing). Sharded
pub/sub (``SPUBLISH`` to ``<prefix>{<key>}`` channels) would keep messages in
one shard, but needs an ``SSUBSCRIBE`` round trip per waited session and one
subscriber connection per shard, and redis-py's asyncio cluster client only
gained pub/sub (``ClusterPubSub``) in recent releases, while this extra
supports redis-py >= 5. Contention on one session is rare, so the broadcast
channel wins on latency (no subscribe per wait) and simplicity.

Failure behaviour
=================

Driver errors are translated in one place (:func:`_translated`): a server
that is down, loading, read-only after a failover, or a cluster that is
redirecting or down raises :class:`~sessionware.StoreUnavailable`; other Redis
errors raise :class:`~sessionware.StoreError`. A script is atomic, so a failed
operation wrote everything or nothing. Only :meth:`~RedisStore.read` is
retried (once), because only it is idempotent: a retried ACQUIRE whose first
attempt ran would leave a lock nobody holds. For the same reason the clients
this store builds have redis-py's own retries turned off; a client passed in
with ``client=`` keeps its own retry policy (turn it off there too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Union

from sessionware.exceptions import ConfigurationError, LeaseLost, StoreError, StoreUnavailable
from sessionware.stores import _redis_scripts as scripts
from sessionware.stores.base import Lease, Locked, Store, backoff_delay

try:
    import redis.asyncio as aioredis
    from redis import exceptions as rexc
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "RedisStore needs redis-py: pip install sessionware[redis]"
    ) from exc

try:  # redis-py >= 7
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

try:  # the lean command path needs hiredis's parser (the [redis] extra brings it)
    from sessionware.stores._resp import RespPipe, evalsha_command, pack
except ImportError:  # pragma: no cover - redis-py without hiredis
    RespPipe = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub
    from redis.commands.core import AsyncScript

__all__ = ["RedisStore"]

logger = logging.getLogger(__name__)

Client = Union["aioredis.Redis", "RedisCluster"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "sessionware:"

_RECHECK_CAP = 1.0  # longest sleep between re-checks while notifications work
_RECHECK_BASE = 0.05

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # includes BusyLoadingError (LOADING), MaxConnectionsError
    rexc.TimeoutError,
    rexc.ReadOnlyError,  # READONLY: a replica after failover
    rexc.ClusterError,  # includes ClusterDownError, MasterDownError
    rexc.AskError,  # includes MovedError: redirections that did not settle
    rexc.TryAgainError,
    rexc.RedisClusterException,  # includes SlotNotCoveredError, topology failures
    OSError,
    asyncio.TimeoutError,
)


# Everything a driver call may raise that _translate maps (_UNAVAILABLE's
# members are all among these).
_DRIVER_ERRORS: tuple[type[Exception], ...] = (rexc.RedisError, OSError, TimeoutError)


def _translate(op: str, exc: Exception) -> Exception:
    """The sessionware error for a driver error: the only place that decides."""
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"Redis unavailable during {op}: {exc!r}",
                                maybe_applied=not _refused(exc))
    if isinstance(exc, rexc.RedisError):
        return StoreError(f"Redis error during {op}: {exc!r}")
    return exc


def _refused(exc: BaseException) -> bool:
    """Whether the connection was refused: then the command was never sent.
    (Any other connection error may have come after the command left.)"""
    cause = exc.__cause__ or exc.__context__
    return isinstance(exc, ConnectionRefusedError) or isinstance(cause, ConnectionRefusedError)


@contextlib.contextmanager
def _translated(op: str) -> Iterator[None]:
    """:func:`_translate` for a block (the hot path uses try/except, which is
    cheaper than a generator-based context manager)."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise _translate(op, exc) from exc


def _ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounded up so a duration never shrinks."""
    return max(1, math.ceil(seconds * 1000))


def _ms_or_empty(seconds: float | None) -> int | str:
    return "" if seconds is None else _ms(seconds)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _decodes_responses(client: Client) -> bool:
    if isinstance(client, RedisCluster):
        return bool(client.get_encoder().decode_responses)
    return bool(client.connection_pool.connection_kwargs.get("decode_responses", False))


def _lean_pipe(url: str, socket_timeout: float | None) -> RespPipe | None:
    """The lean command path for a plain ``redis://`` URL (TCP, optional user,
    password and db), if hiredis is installed; ``None`` (redis-py for every
    command) for TLS, unix sockets and URLs with other options."""
    if RespPipe is None or not url.startswith("redis://"):
        return None
    options: dict[str, Any] = dict(parse_url(url))
    host, port = str(options.pop("host", "localhost")), int(options.pop("port", 6379))
    db = int(options.pop("db", 0))
    username, password = options.pop("username", None), options.pop("password", None)
    if options:
        return None
    return RespPipe(host, port, db=db, username=username, password=password,
                    timeout=socket_timeout)


class RedisStore(Store):
    """Sessions in Redis (or Valkey), single server or cluster.

    :param url: a ``redis://`` or ``rediss://`` URL, used when no ``client``
        is given.
    :param client: a ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster``
        created with ``decode_responses=False``; the store does not close it.
    :param cluster: with ``url``, connect with ``RedisCluster`` (the URL names
        any one node).
    :param prefix: prepended to every key and to the wake-up channel; must not
        contain braces (the session key is the hash tag).
    :param socket_timeout: seconds before a stalled command raises
        :class:`~sessionware.StoreUnavailable` (clients built from ``url``).
    :param max_connections: connections per process in redis-py's pool to a
        single server; when all are busy an operation waits for one (up to
        ``socket_timeout``) rather than failing, so a burst is slowed down, not
        refused. With a ``redis://`` URL and hiredis installed, the session
        operations themselves go over one shared, auto-pipelined connection
        (:mod:`sessionware.stores._resp`), and the pool serves only setup and
        the wake-up subscriber.
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
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(f"prefix {prefix!r} must not contain braces")
        self._owns_client = client is None
        self._fast: RespPipe | None = None
        if client is None:
            client = self._connect(url, cluster, socket_timeout, max_connections)
            if not cluster:
                self._fast = _lean_pipe(url, socket_timeout)
        elif _decodes_responses(client):
            raise ConfigurationError("RedisStore needs a client with decode_responses=False")
        self._client: Client = client
        self._prefix = prefix
        self._channel = f"{prefix}wake"
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._commit = client.register_script(scripts.COMMIT)
        self._release = client.register_script(scripts.RELEASE)
        self._renew = client.register_script(scripts.RENEW)
        self._read = client.register_script(scripts.READ)
        self._create = client.register_script(scripts.CREATE)
        self._delete = client.register_script(scripts.DELETE)
        self._wakeups = _Wakeups(self._pubsub, self._channel)

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
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=socket_timeout, **options)
            return aioredis.Redis.from_pool(pool)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {url!r}: {exc}") from exc

    def _key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    async def _run(self, op: str, script: AsyncScript, key: str,
                   args: Sequence[str | int | bytes], *, idempotent: bool = False) -> Any:
        """Run one script, translating errors; retry once only if ``idempotent``."""
        for attempt in range(2 if idempotent else 1):
            try:
                if self._fast is not None:
                    return await self._evalsha(self._fast, script, self._key(key), args)
                return await script(keys=[self._key(key)], args=args)
            except _DRIVER_ERRORS as exc:
                error = _translate(op, exc)
                if attempt or not idempotent or not isinstance(error, StoreUnavailable):
                    raise error from exc
                logger.debug("retrying idempotent %s after a connection error", op)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _evalsha(fast: RespPipe, script: AsyncScript, rkey: str,
                       args: Sequence[str | int | bytes]) -> Any:
        """EVALSHA on the lean path; after a NOSCRIPT (a flushed or restarted
        server) load the script and run it again, as redis-py's Script does."""
        try:
            return await fast.execute(evalsha_command(script.sha, rkey, args))
        except rexc.NoScriptError:
            source = script.script
            body = source if isinstance(source, (bytes, str)) else bytes(source)
            script.sha = (await fast.execute(pack("SCRIPT", "LOAD", body))).decode()
            return await fast.execute(evalsha_command(script.sha, rkey, args))

    async def _fenced(self, op: str, script: AsyncScript, lease: Lease,
                      args: Sequence[str | int | bytes]) -> None:
        if not await self._run(op, script, lease.key, [str(lease.token), *args]):
            raise LeaseLost(f"lease {lease.token} on session {lease.key[:12]}… is not current")

    # -- lifecycle ------------------------------------------------------------

    async def setup(self) -> None:
        """Load the scripts (on every primary of a cluster). Idempotent."""
        for script in (self._acquire, self._commit, self._release, self._renew,
                       self._read, self._create, self._delete):
            with _translated("setup"):
                script.sha = await self._client.script_load(script.script)

    async def aclose(self) -> None:
        await self._wakeups.aclose()
        if self._fast is not None:
            self._fast.close()
        if self._owns_client:
            with contextlib.suppress(Exception), _translated("aclose"):
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
        await self._fenced("commit", self._commit, lease, [data, _ms(ttl), self._channel])

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self._fenced("release", self._release, lease,
                           [_ms_or_empty(ttl), _ms(refresh_after), self._channel])

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._fenced("renew", self._renew, lease, [_ms(lease_ttl)])

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        reply = await self._run("read", self._read, key,
                                [_ms_or_empty(ttl), _ms(refresh_after)], idempotent=True)
        return None if reply is None else bytes(reply)

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        args: list[bytes | int | str] = [data, _ms(ttl), _ms_or_empty(absolute_ttl)]
        return bool(await self._run("create", self._create, key, args))

    async def delete(self, lease: Lease) -> None:
        await self._fenced("delete", self._delete, lease, [self._channel])

    async def purge_expired(self) -> int:
        """Always 0: nothing is left to purge. Every script that sets a
        session's idle deadline sets its key's ``PEXPIREAT`` too, so Redis
        deletes expired sessions itself (when touched, and by its active expiry
        cycle), and a purge here would only SCAN every node's keyspace to find
        what Redis removes anyway."""
        return 0

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self._wakeups.wait(self._key(key).encode(), timeout, attempt)

    # -- the subscriber ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _pubsub(self) -> AsyncIterator[PubSub]:
        """A pub/sub connection: from the client's pool, or to any one cluster node."""
        client = self._client
        if not isinstance(client, RedisCluster):
            pubsub = client.pubsub()
            try:
                yield pubsub
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            return
        await client.initialize()
        node = client.get_random_node()
        pool = aioredis.ConnectionPool(connection_class=node.connection_class,
                                       **node.connection_kwargs)
        node_client = aioredis.Redis.from_pool(pool)
        try:
            pubsub = node_client.pubsub()
            try:
                yield pubsub
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        finally:
            await node_client.aclose()


class _Wakeups:
    """One subscriber for all local waiters of a store: key -> their futures."""

    def __init__(self, pubsub: Callable[[], AbstractAsyncContextManager[PubSub]],
                 channel: str) -> None:
        self._pubsub = pubsub
        self._channel = channel
        self._waiters: dict[bytes, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = False
        self._closing = False

    async def wait(self, rkey: bytes, timeout: float, attempt: int) -> None:
        if self._task is None and not self._closing:
            self._task = asyncio.get_running_loop().create_task(self._listen())
        if self._subscribed:
            delay = backoff_delay(attempt, base=_RECHECK_BASE, cap=_RECHECK_CAP)
        else:
            delay = backoff_delay(attempt)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(rkey, set()).add(waiter)
        try:
            await asyncio.wait([waiter], timeout=min(timeout, delay))
        finally:
            waiters = self._waiters.get(rkey)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[rkey]

    def _wake(self, rkey: bytes) -> None:
        for waiter in self._waiters.pop(rkey, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _wake_all(self) -> None:
        for rkey in list(self._waiters):
            self._wake(rkey)

    async def _listen(self) -> None:
        failures = 0
        while not self._closing:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:  # redis-py may turn our cancellation into an error
                    return
                level = logging.DEBUG if failures else logging.WARNING
                logger.log(level, "session wake-up subscriber lost: %r; reconnecting", exc)
            failures += 1
            await asyncio.sleep(backoff_delay(failures, base=0.01, cap=_RECHECK_CAP))

    async def _listen_once(self) -> None:
        try:
            async with self._pubsub() as pubsub:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._wake(message["data"])
                    elif message["type"] == "subscribe":
                        self._subscribed = True
                        self._wake_all()  # messages may have been missed until now
        finally:
            self._subscribed = False
            self._wake_all()

    async def aclose(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
