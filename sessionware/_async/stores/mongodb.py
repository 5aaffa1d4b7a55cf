"""MongoDBStore: sessions in MongoDB, one document per session (``pip install
sessionware[mongodb]``: pymongo >= 4.13). Design, round trips, waiting, failures and tests:
docs/stores/mongodb.md.

One collection (default ``sessionware.sessions``), times as the server's dates (``$$NOW``).
Fields: ``_id`` (the store key), ``data`` (BinData), ``token`` (long), ``locked_until`` and
``locked_at`` (null: unlocked), ``holder`` (the nonce of the acquire that took the lease),
``created_at``, ``expires_at`` (capped by ``absolute_expires_at``), ``waiting`` (a refused
acquire asked to be woken); the TTL index ``expires_at_ttl``, made by
:meth:`MongoDBStore.setup`. Each operation is one command on one document filtered live
(:data:`LIVE`), the fenced ones on the token too; ``scan`` and ``purge_expired`` a ``find``
per batch. Waiters are woken by a release in this process or by a change stream
(:data:`WAKE_EVENTS`); else they poll. Privileges on the collection: ``find``, ``insert``,
``update``, ``remove``, ``createIndex`` (not with ``create_indexes=False``), ``changeStream``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from sessionware._async.io.primitives import Once
from sessionware._async.stores._listener import LISTEN_TICK, Run, WakeupListener
from sessionware._async.stores.base import SCAN_BATCH, PerProcess, Store, check_limits, time_budget
from sessionware.exceptions import ConfigurationError, SessionTooLarge, StoreError
from sessionware.stores._errors import ErrorTable, Meaning, Row, lease_lost, needs_extra
from sessionware.stores.answers import Lease, Locked, Record, backoff_delay

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

with needs_extra("MongoDBStore", "pymongo >= 4.13", "mongodb"):
    import pymongo
    from bson import Binary
    from pymongo import AsyncMongoClient, ReturnDocument
    from pymongo import errors as mongo
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["MongoDBStore"]

logger = logging.getLogger(__name__)

Document = dict[str, Any]
T = TypeVar("T")

# MongoDB's limit for one BSON document, less room for the other fields and framing
_MAX_DATA = 16 * 1024 * 1024 - 1024
_TOKEN_SHIFT = 1 << 20  # tokens: ms(now) * 2**20 + offset
_POLL_BASE = 0.002  # first re-check of a polling waiter, seconds
_POLL_CAP = 0.1  # longest sleep between re-checks of a polling waiter
# A find's batch_size is also its limit: unless told one, the server's first
# reply holds only 101 documents, so a batch of scan() or purge is one round trip.
_PURGE_BATCH = 500
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")

# -- conditions and pipelines --------------------------------------------------
# Durations are milliseconds (dates add as ms); every time is the server's
# $$NOW, one value for the whole command.

# Filter: the document is live (its idle deadline, capped by the hard one by
# every write, is ahead). Part of every command's filter; discard() deletes on
# it alone, whatever the lease.
LIVE: Document = {"$expr": {"$gt": ["$expires_at", "$$NOW"]}}

# Filter, with the token's: renew() only while the lease is held (null: ended
# by commit or release; a lapsed one is still held, as no newer acquire took it).
HELD: Document = {"locked_until": {"$ne": None}}

# Filter of purge_expired(): the ids of a batch, then those still expired.
EXPIRED: Document = {"$expr": {"$lte": ["$expires_at", "$$NOW"]}}

# Expression: nobody holds the lease (null, or a deadline passed).
FREE: Document = {"$or": [{"$eq": ["$locked_until", None]},
                          {"$lte": ["$locked_until", "$$NOW"]}]}

# Expression: the next token, larger than the current one and than any
# token this key's earlier documents handed out before this millisecond.
NEXT_TOKEN: Document = {"$max": [{"$add": ["$token", 1]},
                                 {"$multiply": [{"$toLong": "$$NOW"}, _TOKEN_SHIFT]}]}

# Change stream filter: an update that cleared the waiting flag (a commit or
# release that found it set). Not deletes: the TTL monitor's would reach
# every process (a waiter finds a deleted session at its next re-check).
# MongoDB before 5.0 logs a pipeline update as a replacement.
WAKE_EVENTS: Document = {"$or": [
    {"operationType": "update", "updateDescription.updatedFields.waiting": False},
    {"operationType": "replace"},
]}

# Projection of inspect() and scan(): plain fields (mongoeco refuses
# projection expressions; dates convert exactly here).
RECORD_FIELDS: Document = {"data": 1, "expires_at": 1, "locked_until": 1, "locked_at": 1,
                           "created_at": 1}


def _target(ttl: float) -> Document:
    """Expression: the idle deadline ``ttl`` from now, capped by the hard
    deadline ($min ignores a null one)."""
    return {"$min": [{"$add": ["$$NOW", _ms(ttl)]}, "$absolute_expires_at"]}


def _slid(ttl: float, refresh_after: float) -> Document:
    """Expression: the slid idle deadline, or the current one when the slide
    would move it by less than ``refresh_after``."""
    return {"$cond": [
        {"$gte": [{"$subtract": [_target(ttl), "$expires_at"]}, _ms(refresh_after)]},
        _target(ttl), "$expires_at"]}


def acquire_pipeline(lease_ttl: float, holder: int) -> list[Document]:
    """acquire(): on the live document. Free or lapsed: a new token, the lease
    until ``lease_ttl`` from now, dated now, ``holder`` as its nonce. Held:
    only ``waiting`` set. The caller tells which by the nonce after."""
    return [
        {"$set": {"_free": FREE}},
        {"$set": {
            "token": {"$cond": ["$_free", NEXT_TOKEN, "$token"]},
            "locked_until": {"$cond": ["$_free", {"$add": ["$$NOW", _ms(lease_ttl)]},
                                       "$locked_until"]},
            "locked_at": {"$cond": ["$_free", "$$NOW", "$locked_at"]},
            "holder": {"$cond": ["$_free", holder, "$holder"]},
            "waiting": {"$cond": ["$_free", "$waiting", True]},
        }},
        {"$unset": "_free"},
    ]


def commit_pipeline(data: bytes, ttl: float) -> list[Document]:
    """commit(): on the live document carrying the token. Writes ``data``,
    slides the idle deadline, unlocks, clears ``waiting`` (the change stream
    sees that)."""
    return [{"$set": {"data": {"$literal": Binary(data)}, "locked_until": None,
                      "locked_at": None, "expires_at": _target(ttl), "waiting": False}}]


def release_pipeline(ttl: float | None, refresh_after: float) -> list[Document]:
    """release(): as commit's without data; slides the idle deadline only
    with ``ttl``, when that moves it by ``refresh_after`` or more."""
    update: Document = {"locked_until": None, "locked_at": None, "waiting": False}
    if ttl is not None:
        update["expires_at"] = _slid(ttl, refresh_after)
    return [{"$set": update}]


def renew_update(lease_ttl: float) -> list[Document]:
    """renew(): on the live document carrying the token, still :data:`HELD`.
    Moves the lease deadline; ``locked_at`` stays the grant's."""
    return [{"$set": {"locked_until": {"$add": ["$$NOW", _ms(lease_ttl)]}}}]


def create_pipeline(key: str, data: bytes, ttl: float,
                    absolute_ttl: float | None) -> list[Document]:
    """create(): upserted on the key. A live document stays as it was; a
    missing or expired one becomes the new, unlocked session, with a token
    above its predecessor's, created now."""
    absolute = None if absolute_ttl is None else {"$add": ["$$NOW", _ms(absolute_ttl)]}
    fresh = {
        "_id": key, "data": {"$literal": Binary(data)},
        "token": {"$max": [NEXT_TOKEN, {"$add": [
            {"$multiply": [{"$toLong": "$$NOW"}, _TOKEN_SHIFT]},
            random.randrange(_TOKEN_SHIFT)]}]},
        "locked_until": None, "locked_at": None, "holder": None, "created_at": "$$NOW",
        "expires_at": {"$min": [{"$add": ["$$NOW", _ms(ttl)]}, absolute]},
        "absolute_expires_at": absolute, "waiting": False,
    }
    return [{"$replaceWith": {"$cond": [{"$gt": ["$expires_at", "$$NOW"]}, "$$ROOT", fresh]}}]


def read_pipeline(ttl: float, refresh_after: float) -> list[Document]:
    """read() with a slide: on the live document, as release's slide."""
    return [{"$set": {"expires_at": _slid(ttl, refresh_after)}}]


def scan_filter(after: str) -> Document:
    """scan(), one batch: the live documents with keys past ``after`` (the
    last key of the batch before; ``""`` at first), read sorted on ``_id``
    with a limit: keyset pagination on the ``_id`` index."""
    return {"_id": {"$gt": after}, **LIVE}


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


# Server error codes of "out of reach for now", not applied: unreachable hosts,
# time limits and timeouts, write conflicts, step-downs, shutdowns, not primary,
# socket errors, Cosmos DB's "request rate is large".
_UNAVAILABLE_CODES = frozenset({6, 7, 24, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600,
                                11602, 13435, 13436, 16500})
_UNAUTHORIZED = 13


def _code(exc: BaseException) -> int | None:
    return getattr(exc, "code", None)


# Never sent or refused by the server: not applied; sent and never answered,
# or not replicated: maybe applied; the rest cannot serve as configured.
ERRORS = ErrorTable("MongoDB", [
    Row((mongo.ServerSelectionTimeoutError, mongo.NotPrimaryError), Meaning.NOT_APPLIED),
    Row((mongo.NetworkTimeout, mongo.AutoReconnect, mongo.ConnectionFailure,
         mongo.WriteConcernError), Meaning.MAYBE_APPLIED),
    Row(mongo.ExecutionTimeout, Meaning.NOT_APPLIED),
    Row(mongo.OperationFailure, Meaning.NOT_APPLIED,
        when=lambda exc: _code(exc) in _UNAVAILABLE_CODES),
    Row(mongo.OperationFailure, Meaning.MAYBE_APPLIED,  # transient; the first try unknown
        when=lambda exc: isinstance(exc, mongo.OperationFailure)
        and exc.has_error_label("RetryableWriteError")),
    Row(mongo.OperationFailure, Meaning.ERROR, when=lambda exc: _code(exc) == _UNAUTHORIZED,
        hint=" (the user needs the actions docs/stores/mongodb.md lists on the collection)"),
    Row(mongo.OperationFailure, Meaning.ERROR, ops=frozenset({"setup"}),  # a conflicting index
        hint=" (setup() creates the index {expires_at: 1} named expires_at_ttl with "
             "expireAfterSeconds 0; drop a conflicting one, or pass create_indexes=False)"),
    Row(mongo.PyMongoError, Meaning.ERROR),
])


def _where(url: str) -> str:
    """host[:port],... of a MongoDB URL, for messages (never the password)."""
    match = re.fullmatch(r"(mongodb(?:\+srv)?)://(?:[^@/]*@)?([^/?]*)(/[^?]*)?(\?.*)?", url)
    if match is None:
        raise ConfigurationError("a MongoDB URL starts mongodb:// or mongodb+srv://")
    return match.group(2) or "localhost"


class MongoDBStore(Store):
    """Sessions in MongoDB.

    :param url: a ``mongodb://`` or ``mongodb+srv://`` connection string.
    :param database: the database of the collection.
    :param collection: the collection of the sessions.
    :param create_indexes: :meth:`setup` creates the TTL index if missing.
    :param timeout: seconds before a command raises :class:`~sessionware.StoreUnavailable`.
    :param max_connections: the most connections each process's client opens.
    :param watch: wake waiters of other processes by a change stream, if any.
    :param client_options: more keyword arguments for pymongo's client.
    """

    def __init__(self, url: str, *, database: str = "sessionware", collection: str = "sessions",
                 create_indexes: bool = True, timeout: float = 5.0, max_connections: int = 100,
                 watch: bool = True, client_options: Mapping[str, Any] | None = None) -> None:
        for what, name in (("database", database), ("collection", collection)):
            if not _NAME.fullmatch(name) or (what == "database" and "." in name):
                raise ConfigurationError(f"{what} name {name!r}: letters, digits, _ - .")
        check_limits(timeout, max_connections)
        self._url, self._where, self._names = url, _where(url), (database, collection)
        self._create_indexes, self._timeout = create_indexes, timeout
        self._options: dict[str, Any] = {
            "appname": "sessionware", "tz_aware": True, "maxPoolSize": max_connections,
            "serverSelectionTimeoutMS": _ms(timeout), "connectTimeoutMS": _ms(timeout),
            **(client_options or {})}
        self._client: PerProcess[AsyncMongoClient[Document]] = PerProcess(
            self, self._connected, lambda client: client.close())
        self._watcher = _Watcher(self, enabled=watch)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        options, driver_url = url.split(cls)  # the driver checks its own URI options
        return cls(driver_url, **options)

    def __repr__(self) -> str:
        database, collection = self._names
        return f"{type(self).__name__}({self._where!r}, namespace={database}.{collection!r})"

    # -- lifecycle ---------------------------------------------------------------

    async def setup(self) -> None:
        """Create the TTL index on ``expires_at`` if missing (not with ``create_indexes=False``);
        idempotent, from any number of processes at once."""
        if self._create_indexes:
            await self._command("setup", lambda c: c.create_index(
                "expires_at", name="expires_at_ttl", expireAfterSeconds=0))

    async def aclose(self) -> None:
        """Stop the watcher and close the client's connections."""
        await self._watcher.aclose()
        await self._client.aclose()

    # -- operations --------------------------------------------------------------

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        holder = random.getrandbits(63)
        document = await self._command("acquire", lambda c: c.find_one_and_update(
            {"_id": key, **LIVE}, acquire_pipeline(lease_ttl, holder),
            return_document=ReturnDocument.AFTER))
        if document is None:
            return None
        if document.get("holder") == holder:
            return Lease(key, int(document["token"]), bytes(document["data"]))
        return Locked(_seconds_until(document["locked_until"], lease_ttl))

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        if len(data) > _MAX_DATA:
            raise SessionTooLarge(len(data), _MAX_DATA)
        await self._fenced("commit", lease, commit_pipeline(data, ttl))

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self._fenced("release", lease, release_pipeline(ttl, refresh_after))

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._fenced("renew", lease, renew_update(lease_ttl), HELD, wakes=False)

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        if ttl is None:
            document = await self._command("read", lambda c: c.find_one(
                {"_id": key, **LIVE}, {"data": 1}))
        else:
            document = await self._command("read", lambda c: c.find_one_and_update(
                {"_id": key, **LIVE}, read_pipeline(ttl, refresh_after), projection={"data": 1}))
        return None if document is None else bytes(document["data"])

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        if len(data) > _MAX_DATA:
            raise SessionTooLarge(len(data), _MAX_DATA)
        collection = await self._collection()
        with self._bounded("create"):
            try:
                result = await collection.update_one(
                    {"_id": key}, create_pipeline(key, data, ttl, absolute_ttl), upsert=True)
            except mongo.DuplicateKeyError:
                return False  # two creates upserted the key at once: the other one won
        # upserted: the key was free; modified: an expired document replaced
        return result.upserted_id is not None or result.modified_count == 1

    async def delete(self, lease: Lease) -> None:
        result = await self._command("delete", lambda c: c.delete_one(
            {"_id": lease.key, "token": lease.token, **LIVE}))
        if result.deleted_count == 0:
            raise lease_lost(lease)
        self._watcher.waiters.wake(lease.key)

    async def discard(self, key: str) -> bool:
        """Delete the live document ``key`` whatever its lease; waiters of other
        processes find it gone at their next re-check (:data:`WAKE_EVENTS` has no deletes)."""
        result = await self._command("discard", lambda c: c.delete_one({"_id": key, **LIVE}))
        self._watcher.waiters.wake(key)
        return result.deleted_count == 1

    async def inspect(self, key: str) -> Record | None:
        document = await self._command("inspect", lambda c: c.find_one(
            {"_id": key, **LIVE}, RECORD_FIELDS))
        return None if document is None else _record(document)

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        if batch_size < 1:  # MongoDB's limit(0) would be no limit at all
            raise ConfigurationError(f"batch_size {batch_size}: at least 1")
        collection, after = await self._collection(), ""
        while True:
            with self._bounded("scan"):  # never around the yield
                found = await collection.find(
                    scan_filter(after), RECORD_FIELDS, sort=[("_id", pymongo.ASCENDING)],
                    limit=batch_size, batch_size=batch_size).to_list()
            if found:
                yield [_record(document) for document in found]
            if len(found) < batch_size:
                return
            after = found[-1]["_id"]

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired document now, ``_PURGE_BATCH`` at a time (the
        TTL monitor deletes them too, about once a minute)."""
        collection, purged = await self._collection(), 0
        while True:
            with self._bounded("purge"):
                found = await collection.find(EXPIRED, {"_id": 1}, limit=_PURGE_BATCH,
                                              batch_size=_PURGE_BATCH).to_list()
            ids = [document["_id"] for document in found]
            if ids:
                with self._bounded("purge"):
                    result = await collection.delete_many({"_id": {"$in": ids}, **EXPIRED})
                purged += result.deleted_count
                if progress is not None and result.deleted_count:
                    progress(result.deleted_count)
            if len(ids) < _PURGE_BATCH:
                return purged

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self._watcher.wait(key, timeout, attempt)

    # -- running commands --------------------------------------------------------

    async def _fenced(self, op: str, lease: Lease, update: list[Document],
                      condition: Document | None = None, *, wakes: bool = True) -> None:
        result = await self._command(op, lambda c: c.update_one(
            {"_id": lease.key, "token": lease.token, **LIVE, **(condition or {})}, update))
        if result.matched_count == 0:
            raise lease_lost(lease)
        if wakes:
            self._watcher.waiters.wake(lease.key)

    async def _command(self, op: str,
                       command: Callable[[AsyncCollection[Document]], Awaitable[T]]) -> T:
        """``command`` on the collection, within the time budget, errors translated."""
        collection = await self._collection()
        with self._bounded(op):
            return await command(collection)

    @contextlib.contextmanager
    def _bounded(self, op: str) -> Iterator[None]:
        """One command's time budget and error translation, around the driver call."""
        with ERRORS.mapped(op, self._where), pymongo.timeout(time_budget(self._timeout)):
            yield

    async def _collection(self) -> AsyncCollection[Document]:
        database, collection = self._names
        return (await self._client.get())[database][collection]

    async def _connected(self) -> AsyncMongoClient[Document]:
        return AsyncMongoClient(self._url, **self._options)  # it connects in the background


def _record(document: Document) -> Record:
    locked_until, locked_at = document["locked_until"], document["locked_at"]
    return Record(document["_id"], bytes(document["data"]), _epoch(document["expires_at"]),
                  None if locked_until is None else _epoch(locked_until),
                  _epoch(document["created_at"]),
                  None if locked_at is None else _epoch(locked_at))


def _epoch(moment: datetime.datetime) -> float:
    """Seconds since the epoch of a BSON date (naive ones, ``tz_aware=False``: UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _seconds_until(deadline: datetime.datetime | None, lease_ttl: float) -> float:
    """The refusal's hint by this process's clock (see the docs), at most a lease."""
    if deadline is None:
        return 0.001
    left = (deadline - datetime.datetime.now(datetime.UTC)).total_seconds()
    return min(max(left, 0.001), max(lease_ttl, 0.001))


class _Watcher(WakeupListener[str]):
    """The one change stream of a store's waiters, on a deployment that has
    them (asked at the first wait): it wakes the waiters of each changed key."""

    _LOST = (mongo.PyMongoError, StoreError)  # a failed stream (anything else: a bug)

    def __init__(self, store: MongoDBStore, *, enabled: bool) -> None:
        super().__init__("sessionware-mongodb-watcher", f"change stream on {store._where}",
                         enabled=enabled)
        self._store, self._probe = store, Once()
        self._streams: bool | None = None  # whether the deployment has change streams

    async def _may_listen(self) -> bool:
        if self._streams is None:
            try:
                await self._probe.run(self._find_streams)
            except StoreError as exc:
                logger.debug("could not tell whether %s has change streams: %s", self._store, exc)
        return bool(self._streams)

    async def _find_streams(self) -> None:
        """Ask ``hello`` once: a replica set member names its set, a mongos
        says ``isdbgrid``; a standalone server has no change streams."""
        hello = await self._store._command(
            "hello", lambda c: c.database.client.admin.command("hello"))
        self._streams = "setName" in hello or hello.get("msg") == "isdbgrid"
        if not self._streams:
            logger.debug("%s is a standalone server: waiters poll", self._store._where)

    def _polling_delay(self, attempt: int) -> float:
        return backoff_delay(attempt, base=_POLL_BASE, cap=_POLL_CAP)

    async def _listen_once(self, run: Run) -> bool:
        collection = await self._store._collection()
        async with await collection.watch(
                [{"$match": WAKE_EVENTS}, {"$project": {"documentKey": 1}}],
                max_await_time_ms=_ms(LISTEN_TICK)) as stream:
            self._began_listening()
            try:
                while not run.stop.is_set() and stream.alive:
                    change = await stream.try_next()
                    if change is not None:
                        self.waiters.wake(change["documentKey"]["_id"])
            finally:
                self._stopped_listening()
        return False  # stopped, or the stream ended (invalidated): reopened after a pause
