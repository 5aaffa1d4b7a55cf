"""RedisStore: sessions in Redis or Valkey, single server or Redis Cluster
(``pip install sessionware[redis]``). Design and failures: docs/stores/redis.md.

Keys: one hash per session at ``<prefix>{<key>}`` (the hash tag: one cluster slot), fields
``d`` data, ``t`` token, ``l`` lease deadline, ``e`` idle deadline (the key's ``PEXPIREAT``),
``a`` absolute deadline, ``w`` a waiter's flag, ``c`` created, ``g`` granted (server ms);
``<prefix>{<key>}:x``, a bookkeeping record's marker or a watcher's claim; the pub/sub
channel ``<prefix>wake``.

Operations: one ``EVALSHA`` each, of the script of its name in
:mod:`sessionware.stores._redis_scripts` (over the lean path for a plain ``redis://`` URL);
``scan``: ``SCAN`` and pipelined ``HMGET``; ``purge_expired``: 0, Redis expires keys;
``wait``: a subscriber on the channel, which ``watch_expired`` also subscribes to
``__keyevent@<db>__:expired`` (then CLAIM on the marker: one process reports each expiry).

ACL (on a cluster also ``+cluster|slots +cluster|shards +command``)::

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, Self, Union

from sessionware._async.io.primitives import IS_SYNC
from sessionware._async.stores._listener import LISTEN_TICK, Run, WakeupListener
from sessionware._async.stores.base import SCAN_BATCH, Lease, Locked, Record, Store, report_each
from sessionware.exceptions import ConfigurationError, StoreError, StoreUnavailable
from sessionware.stores import _redis_scripts as scripts
from sessionware.stores._errors import ErrorTable, Meaning, Row, described, lease_lost, needs_extra

with needs_extra("RedisStore", "redis-py", "redis"):
    import redis.asyncio as driver
    from redis import exceptions as rexc
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

from sessionware.stores import _redis_protocol as proto
from sessionware.stores._redis_protocol import MARKER_SUFFIX, evalsha_command, ms, ms_or_empty

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

# What redis-py's errors mean, first match decides (wrong credentials: no retry passes).
ERRORS = ErrorTable("Redis", [
    Row(rexc.AuthenticationError, Meaning.ERROR),
    Row(proto.UNAVAILABLE, Meaning.NOT_APPLIED, when=proto.connection_refused,
        hint=" (connection refused: no server listens there)"),
    Row(proto.UNAVAILABLE, Meaning.NOT_APPLIED, when=proto.refused_by_server),
    Row(proto.UNAVAILABLE, Meaning.MAYBE_APPLIED),
    Row(rexc.RedisError, Meaning.ERROR),
], reclassify=proto.reclassified)


def _checked_client(store: str, client: object) -> Client:
    """``client``, if this face of the store can use it."""
    if not isinstance(client, (driver.Redis, RedisCluster)):
        face = driver.__name__  # redis.asyncio here, redis in the sync twin
        kind = f"{type(client).__module__}.{type(client).__qualname__}"
        raise ConfigurationError(f"{store} needs a {face}.Redis or RedisCluster client, not a "
                                 f"{kind}: pass {store}(client={face}.Redis(...))")
    if client.get_encoder().decode_responses:  # type: ignore[no-untyped-call,unused-ignore]
        raise ConfigurationError(f"{store} needs a client with decode_responses=False")
    return client


def _connect(url: str, cluster: bool, socket_timeout: float | None,
             max_connections: int) -> Client:
    options: dict[str, Any] = {"retry": Retry(NoBackoff(), 0), "socket_timeout": socket_timeout,
                               "socket_connect_timeout": socket_timeout}
    try:
        if cluster:
            return RedisCluster.from_url(url, **options)
        # a blocking pool queues what passes max_connections; the default one raises
        pool = driver.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=socket_timeout, **options,
            **proto.pool_options())
        return driver.Redis.from_pool(pool)
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {url!r}: {exc}") from exc


class RedisStore(Store):
    """Sessions in Redis (or Valkey), single server or cluster.

    :param url: a ``redis://`` or ``rediss://`` URL, used when no ``client`` is given.
    :param client: a ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster`` created with
        ``decode_responses=False``; the store does not close it. (For WSGI, the blocking face
        takes a ``redis.Redis`` or ``redis.RedisCluster``: pass that store a client of its own.)
    :param cluster: with ``url``, connect with ``RedisCluster`` (the URL names any one node).
    :param prefix: prepended to every key and to the wake-up channel; must not contain braces
        (the session key is the hash tag).
    :param socket_timeout: seconds before a stalled command raises
        :class:`~sessionware.StoreUnavailable` (clients built from ``url``).
    :param max_connections: connections per process in redis-py's pool to a single server;
        when all are busy an operation waits for one (up to ``socket_timeout``): a burst is
        slowed down, not refused. On the lean path the pool serves only set-up and the
        subscriber.
    :param lean: send the session operations over the lean path (see "The lean command
        path" in the store's docs) where the URL allows it: the default. ``False`` sends
        everything through redis-py's client (more CPU per request): for a driver feature
        the lean path lacks, or to rule it out when chasing a problem.
    :param wait_replicas: acknowledge a write (``acquire``, ``commit``, ``create``,
        ``delete``, ``discard``) only once this many replicas have it: ``WAIT`` after the
        script, on the same connection. Writes then survive a failover to any replica
        that acknowledged them; 0 (the default) acknowledges what the primary applied,
        which a failover to a lagging replica loses. A single server only (not a
        cluster); the writes go through redis-py's pool, not the lean path (``WAIT``
        blocks the connection it runs on).
    :param wait_timeout: seconds ``WAIT`` waits for the replicas (keep it below
        ``store_timeout`` and ``socket_timeout``). A write fewer replicas acknowledged
        in time was applied on the primary but may be lost: it raises
        :class:`~sessionware.StoreUnavailable` with ``maybe_applied``, so the core
        repeats it, and answers :class:`~sessionware.OutcomeUnknown` if the
        replicas still do not confirm it; never a success.
    """

    def __init__(self, url: str = DEFAULT_URL, *, client: Client | None = None,
                 cluster: bool = False, prefix: str = DEFAULT_PREFIX,
                 socket_timeout: float | None = 5.0, max_connections: int = 100,
                 lean: bool = True, wait_replicas: int = 0,
                 wait_timeout: float = 1.0) -> None:
        if "{" in prefix or "}" in prefix:
            raise ConfigurationError(f"prefix {prefix!r} must not contain braces")
        if wait_replicas < 0 or wait_timeout <= 0:
            raise ConfigurationError("wait_replicas must be >= 0 and wait_timeout > 0")
        if wait_replicas and (cluster or isinstance(client, RedisCluster)):
            raise ConfigurationError("wait_replicas needs a single server, not a cluster")
        self._wait = (wait_replicas, ms(wait_timeout))  # at least 1 ms: WAIT n 0 blocks
        self._owns_client = client is None
        client = (_connect(url, cluster, socket_timeout, max_connections) if client is None
                  else _checked_client(type(self).__name__, client))
        self._client: Client = client
        address = (proto.lean_address(url)
                   if lean and self._owns_client and not cluster and not wait_replicas else None)
        self._lean: LeanPath | None = None
        if address is not None and LeanPath is not None:
            self._lean = LeanPath(**address, timeout=socket_timeout)
        self._where = proto.where(client)
        self._prefix = prefix
        self._channel = f"{prefix}wake"
        self._scripts = [client.register_script(source) for source in (
            scripts.ACQUIRE, scripts.COMMIT, scripts.RELEASE, scripts.RENEW, scripts.READ,
            scripts.CREATE, scripts.DELETE, scripts.DISCARD, scripts.INSPECT, scripts.CLAIM)]
        (self._acquire, self._commit, self._release, self._renew, self._read, self._create,
         self._delete, self._discard, self._inspect, self._claim) = self._scripts
        self._wakeups = _Wakeups(self._subscription, self._channel)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        options, driver_url = url.split(cls, _driver_url_options())
        if url.scheme.endswith("+cluster"):
            options.setdefault("cluster", True)
            driver_url = url.scheme.removesuffix("+cluster") + driver_url[len(url.scheme):]
        return cls(driver_url, **options)

    async def _run(self, op: str, script: AsyncScript, key: str,
                   args: Sequence[str | int | bytes], *, idempotent: bool = False,
                   marked: bool = False, write: bool = False) -> Any:
        """Run one script (``marked``: KEYS[2] is the marker); retry once if
        ``idempotent``; a ``write`` waits for the replicas if the store was told to."""
        rkey = f"{self._prefix}{{{key}}}"
        keys = [rkey, rkey + MARKER_SUFFIX] if marked else [rkey]
        if write and self._wait[0]:
            with ERRORS.mapped(op, self._where):
                return await self._eval_replicated(op, script, keys, args)
        try:
            return await self._eval(script, keys, args)
        except ERRORS.errors as exc:
            error = ERRORS.translate(op, self._where, exc)
            if not idempotent or not isinstance(error, StoreUnavailable):
                raise error from exc
            logger.debug("retrying idempotent %s after a connection error", op)
        with ERRORS.mapped(op, self._where):
            return await self._eval(script, keys, args)

    async def _eval_replicated(self, op: str, script: AsyncScript, keys: list[str],
                               args: Sequence[str | int | bytes]) -> Any:
        """EVALSHA, then ``WAIT`` on the same connection (one pipeline): the
        script's reply once enough replicas have the write, else StoreUnavailable.
        A script that wrote nothing (a refusal: 0, none) is answered as it is."""
        replicas, timeout_ms = self._wait
        try:
            reply, acknowledged = await self._evalsha_wait(script.sha, keys, args)
        except rexc.NoScriptError:  # a promoted replica may not have it yet
            script.sha = await self._client.script_load(script.script)
            reply, acknowledged = await self._evalsha_wait(script.sha, keys, args)
        if reply and acknowledged < replicas:
            raise StoreUnavailable(
                f"Redis at {self._where}, during {op}: {acknowledged} of {replicas} replicas "
                f"acknowledged the write within {timeout_ms} ms: applied on the primary, "
                "maybe lost by a failover", maybe_applied=True)
        return reply

    async def _eval(self, script: AsyncScript, keys: list[str],
                    args: Sequence[str | int | bytes]) -> Any:
        """EVALSHA, on the lean path if any (after a NOSCRIPT there: SCRIPT LOAD, again)."""
        lean = self._lean
        if lean is None:
            return await script(keys=keys, args=args)
        try:
            return await lean.execute(evalsha_command(script.sha, keys, args))
        except rexc.NoScriptError:
            source = script.script
            body = source if isinstance(source, (bytes, str)) else bytes(source)
            script.sha = (await lean.execute(proto.pack("SCRIPT", "LOAD", body))).decode()
            return await lean.execute(evalsha_command(script.sha, keys, args))

    async def _evalsha_wait(self, sha: str, keys: list[str],
                            args: Sequence[str | int | bytes]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.evalsha(sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", *self._wait)
            return list(await pipe.execute())

    async def _fenced(self, op: str, script: AsyncScript, lease: Lease,
                      args: Sequence[str | int | bytes], *, marked: bool = False,
                      write: bool = False) -> None:
        if not await self._run(op, script, lease.key, [str(lease.token), *args], marked=marked,
                               write=write):
            raise lease_lost(lease)

    async def setup(self) -> None:
        """Load the scripts (on every primary of a cluster). Idempotent."""
        for script in self._scripts:
            with ERRORS.mapped("setup", self._where):
                script.sha = await self._client.script_load(script.script)

    async def aclose(self) -> None:
        """Stop the subscriber and close the connections the store opened (not a client
        passed in)."""
        await self._wakeups.aclose()
        if self._lean is not None:
            self._lean.close()
        if self._owns_client:
            with contextlib.suppress(*ERRORS.errors):
                await self._client.aclose()

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        reply = await self._run("acquire", self._acquire, key, [ms(lease_ttl)], write=True)
        if reply is None:
            return None
        if reply[0] == 0:
            return Locked(reply[1] / 1000)
        return Lease(key, int(reply[1]), bytes(reply[2]))

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        await self._fenced("commit", self._commit, lease, [data, ms(ttl), self._channel],
                           marked=True, write=True)

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self._fenced("release", self._release, lease,
                           [ms_or_empty(ttl), ms(refresh_after), self._channel], marked=True)

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._fenced("renew", self._renew, lease, [ms(lease_ttl)])

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        reply = await self._run("read", self._read, key, [ms_or_empty(ttl), ms(refresh_after)],
                                idempotent=True, marked=True)
        return None if reply is None else bytes(reply)

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        args: list[bytes | int | str] = [data, ms(ttl), ms_or_empty(absolute_ttl)]
        return bool(await self._run("create", self._create, key, args, marked=True,
                                    write=True))

    async def delete(self, lease: Lease) -> None:
        await self._fenced("delete", self._delete, lease, [self._channel], write=True)

    async def discard(self, key: str) -> bool:
        return bool(await self._run("discard", self._discard, key, [self._channel],
                                    write=True))

    async def inspect(self, key: str) -> Record | None:
        reply = await self._run("inspect", self._inspect, key, [], idempotent=True)
        return None if reply is None else proto.record(key, *reply)

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        """SCAN for the store's keys (on every primary of a cluster), then one pipelined
        HMGET per batch. SCAN may return a key twice (while Redis resizes its table), so
        a record may come twice; a key that expired meanwhile is left out."""
        pattern = proto.glob_escaped(self._prefix) + "{*}"
        rkeys: list[bytes] = []
        with ERRORS.mapped("scan", self._where):
            async for rkey in self._client.scan_iter(match=pattern, count=batch_size):
                rkeys.append(rkey)
                if len(rkeys) == batch_size:
                    if batch := await self._fields(rkeys):
                        yield batch
                    rkeys = []
            if rkeys and (batch := await self._fields(rkeys)):
                yield batch

    async def _fields(self, rkeys: list[bytes]) -> list[Record]:
        async with self._client.pipeline(transaction=False) as pipe:
            for rkey in rkeys:
                pipe.hmget(rkey, "d", "e", "l", "c", "g")
            return proto.records(self._prefix, rkeys, await pipe.execute())

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Always 0, and ``progress`` is never called: every script that sets a
        session's idle deadline sets its key's ``PEXPIREAT`` too, so Redis deletes
        expired sessions itself; a purge would only SCAN for what Redis removes."""
        return 0

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self._wakeups.wait(f"{self._prefix}{{{key}}}".encode(), timeout, attempt)

    async def watch_expired(self, report: Callable[[str], Awaitable[object]]) -> bool:
        """Report expired sessions from the server's keyspace notifications
        (``__keyevent@<db>__:expired``, on every primary of a cluster), heard by the store's
        subscriber; ``False``, with a warning, when the server does not send them (``CONFIG
        SET notify-keyspace-events Ex``). Once across processes, best effort: see the docs."""
        if not await self._notifications_on():
            return False
        db = 0 if isinstance(self._client, RedisCluster) else int(
            self._client.connection_pool.connection_kwargs.get("db", 0))
        channel = f"__keyevent@{db}__:expired".encode()
        self._wakeups.watch(channel, functools.partial(self._expired, report))
        return True

    async def _notifications_on(self) -> bool:
        """Whether every primary sends expiry events; ``True`` (and an INFO) when
        the server refuses CONFIG, as managed services may."""
        with ERRORS.mapped("watch_expired", self._where):
            try:
                async with self._node_clients(every_primary=True) as clients:
                    flags = [proto.notify_flags(await client.config_get(proto.NOTIFY_SETTING))
                             for client in clients]
            except rexc.ResponseError as exc:  # NOPERM, or CONFIG renamed away
                logger.info("cannot read %s (%s): watching for expired sessions anyway; the "
                            "server must send expiry events (%s)", proto.NOTIFY_SETTING,
                            described(exc), proto.NOTIFY_FIX)
                return True
        if all(proto.sends_expiries(flag) for flag in flags):
            return True
        logger.warning("expired sessions are not reported: the Redis server does not send "
                       "keyspace notifications for expiries (%s is %r); enable them with `CONFIG "
                       "SET notify-keyspace-events Ex` (on a managed service, its "
                       "notify-keyspace-events parameter) on every primary",
                       proto.NOTIFY_SETTING, ", ".join(flags))
        return False

    async def _expired(self, report: Callable[[str], Awaitable[object]], rkey: bytes) -> None:
        """Report an expired key if it is one of this store's records and this
        process claims it first; nothing raises from here."""
        key = proto.store_key(self._prefix, rkey)
        if key is None:
            return
        try:
            claimed = await self._run("claim", self._claim, key, [], marked=True)
        except StoreError as exc:
            logger.warning("the expiry of session %s… is not reported: %s", key[:12], exc)
            return
        if claimed:  # else bookkeeping, or another process reported it
            await report_each(report, [key])

    @contextlib.asynccontextmanager
    async def _subscription(self, every_primary: bool) -> AsyncIterator[_Subscription]:
        """The subscriber's pub/sub connections: one, or with ``every_primary``
        one per primary of a cluster (expiry events are node-local)."""
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
        """For every primary of a cluster: whether the primaries are the same still, asked
        of ``node`` (refreshing the cluster client would recycle every pooled connection)."""
        client = self._client
        if not every_primary or not isinstance(client, RedisCluster):
            return None
        before = {primary.name for primary in proto.nodes(client, every_primary=True)}

        async def unchanged() -> bool:
            slots = await node.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call,unused-ignore]
            return proto.primaries(slots) == before

        return unchanged

    @contextlib.asynccontextmanager
    async def _node_clients(self, *, every_primary: bool) -> AsyncIterator[list[driver.Redis]]:
        """The store's client for a single server; for a cluster, one of any one node
        (every node hears every PUBLISH) or one per primary, from fresh topology."""
        client = self._client
        if not isinstance(client, RedisCluster):
            yield [client]
            return
        if IS_SYNC:  # the sync cluster client keeps a client per node
            if every_primary:
                client.nodes_manager.initialize()
            yield [client.get_redis_connection(node) for node in proto.nodes(client, every_primary)]
            return
        await client.initialize()
        if every_primary:
            await client.nodes_manager.initialize()
        owned: list[driver.Redis] = []
        try:
            for node in proto.nodes(client, every_primary):
                pool = driver.ConnectionPool(connection_class=node.connection_class,
                                             **node.connection_kwargs)
                owned.append(driver.Redis.from_pool(pool))
            yield owned
        finally:
            for node_client in owned:
                await node_client.aclose()


class _Subscription(NamedTuple):
    """The subscriber's connections: the wake-up channel on the first, expiry events
    on each; ``unchanged``: whether they still reach every primary."""

    pubsubs: list[PubSub]
    unchanged: Callable[[], Awaitable[bool]] | None


class _Watch(NamedTuple):
    """Expiry watching: the key-event channel and what to do with each key heard."""

    channel: bytes
    handle: Callable[[bytes], Awaitable[None]]


class _Wakeups(WakeupListener[bytes]):
    """The store's subscriber: wakes the waiters of each key on the wake-up
    channel; after :meth:`watch` (which starts it) hands on each expired key."""

    def __init__(self, subscription: Callable[[bool], AbstractAsyncContextManager[_Subscription]],
                 channel: str) -> None:
        super().__init__("sessionware-redis-wakeups", "subscriber")
        self._subscription = subscription
        self._channel = channel
        self._watch: _Watch | None = None

    def watch(self, channel: bytes, handle: Callable[[bytes], Awaitable[None]]) -> None:
        """Hand every key heard on ``channel`` to ``handle`` until close."""
        self._after_fork()
        with self._lock:
            self._watch = _Watch(channel, handle)
            self._start()

    def _forked(self) -> None:
        """A forked child does not watch expiries: its parent goes on watching."""
        super()._forked()
        self._watch = None

    async def _listen_once(self, run: Run) -> bool:
        """Subscribe and read until stopped, a watch began or the primaries changed."""
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
