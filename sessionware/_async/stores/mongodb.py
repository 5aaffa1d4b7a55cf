"""MongoDBStore: sessions in MongoDB, one document per session, each operation
one command; waiters woken by a change stream on a replica set. Install with
``pip install sessionware[mongodb]`` (pymongo >= 4.13). Design, round trips,
waiting, failures and what it is tested on: docs/stores/mongodb.md.

One collection (``database.collection``, default ``sessionware.sessions``),
times as the server's dates (``$$NOW``)::

    {
        _id:                 the store key (a hash of the session id)
        data:                BinData, the serialized session
        token:               long, the fencing token
        locked_until:        date, the lease deadline; null: unlocked
        locked_at:           date, when the acquire that took the lease ran; null: unlocked
        holder:              long, a nonce the acquire that took the lease chose
        created_at:          date, when create() wrote the document
        expires_at:          date, the idle deadline, never past the next
        absolute_expires_at: date, the hard deadline; null: none
        waiting:             bool, a refused acquire asked to be woken
    }

Index, made by :meth:`MongoDBStore.setup` (idempotent; ``create_indexes=False``
skips it for deployments provisioned by hand)::

    db.sessions.createIndex({expires_at: 1}, {name: "expires_at_ttl", expireAfterSeconds: 0})

Operations, each one command on one document, its filter live (:data:`LIVE`):

* ``acquire``: ``findAndModify`` with :func:`acquire_pipeline`: takes the lease
  when free or lapsed, else sets ``waiting``; the nonce after tells which.
* ``commit``, ``release``: ``update`` with a pipeline, filtered on the token.
* ``renew``: ``update``, filtered on the token and on the lease still held.
* ``delete``: ``delete``, filtered on the token.
* ``read``: ``find`` (``findAndModify`` when the expiry slides).
* ``create``: an upserting ``update`` whose pipeline replaces only an
  expired document.
* ``discard``: ``delete`` of the live document, whatever its lease.
* ``inspect``: ``find`` of :data:`RECORD_FIELDS`; ``scan``: one ``find`` per
  batch in ``_id`` order (:func:`scan_filter`).
* ``purge_expired``: ``find`` of a batch of expired ids, then ``delete`` of
  those still expired (the TTL index deletes them anyway, about once a minute).
* ``wait``: woken by a release in this process, or by the store's change
  stream (:data:`WAKE_EVENTS`) on a replica set or sharded cluster; else polls.

Privileges on the collection: ``find``, ``insert``, ``update``, ``remove``,
``createIndex`` (not with ``create_indexes=False``) and ``changeStream``.
"""

from __future__ import annotations

import datetime
import logging
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

from sessionware._async.io.primitives import Once
from sessionware._async.stores._listener import LISTEN_TICK, Run, WakeupListener
from sessionware._async.stores.base import (
    SCAN_BATCH,
    Lease,
    Locked,
    PerProcess,
    Record,
    Store,
    backoff_delay,
    time_budget,
)
from sessionware.exceptions import (
    ConfigurationError,
    SessionTooLarge,
    StoreError,
)
from sessionware.stores._errors import ErrorTable, Meaning, Row, lease_lost

try:
    import pymongo
    from bson import Binary
    from pymongo import AsyncMongoClient, ReturnDocument
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.errors import (
        AutoReconnect,
        ConnectionFailure,
        DuplicateKeyError,
        ExecutionTimeout,
        NetworkTimeout,
        NotPrimaryError,
        OperationFailure,
        PyMongoError,
        ServerSelectionTimeoutError,
        WriteConcernError,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "MongoDBStore needs pymongo >= 4.13: pip install sessionware[mongodb]") from exc

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["MongoDBStore"]

logger = logging.getLogger(__name__)

Document = dict[str, Any]

_MAX_DOCUMENT = 16 * 1024 * 1024  # MongoDB's limit for one BSON document
# what the other fields, the key and BSON's framing take, with room to spare
_OVERHEAD = 1024
_MAX_DATA = _MAX_DOCUMENT - _OVERHEAD
_TOKEN_SHIFT = 1 << 20  # tokens: ms(now) * 2**20 + offset
_POLL_BASE = 0.002  # first re-check of a polling waiter, seconds
_POLL_CAP = 0.1  # longest sleep between re-checks of a polling waiter
_PURGE_BATCH = 500
# A find's batch_size is its limit: the server's first reply holds only 101
# documents unless told a batch size (and then as many as fit in 16 MiB; the
# rest come by getMore), so a batch of scan() or purge is one round trip.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")

# -- conditions and pipelines --------------------------------------------------
# Durations are milliseconds (dates add as ms); every time is the server's
# $$NOW, one value for the whole command.

# Filter: the document is live (not past its idle deadline, which every write
# caps by the hard one). Part of every command's filter.
LIVE: Document = {"$expr": {"$gt": ["$expires_at", "$$NOW"]}}

# Expression: nobody holds the lease (null, or a deadline passed).
FREE: Document = {"$or": [{"$eq": ["$locked_until", None]},
                          {"$lte": ["$locked_until", "$$NOW"]}]}

# Expression: the next token, larger than the current one and than any
# token this key's earlier documents handed out before this millisecond.
NEXT_TOKEN: Document = {"$max": [{"$add": ["$token", 1]},
                                 {"$multiply": [{"$toLong": "$$NOW"}, _TOKEN_SHIFT]}]}

# Change stream filter: the events that free a lease someone waits for, an
# update that cleared the waiting flag (a commit or release that found it
# set). Not deletes: the TTL monitor's would reach every process, and a
# session deleted while another process waits for it is found at the
# waiter's next re-check (within RECHECK_CAP). MongoDB before 5.0 logs a
# pipeline update as a replacement: every one of those wakes (the store
# itself never replaces a document).
WAKE_EVENTS: Document = {"$or": [
    {"operationType": "update", "updateDescription.updatedFields.waiting": False},
    {"operationType": "replace"},
]}


def _target(ttl: float) -> Document:
    """Expression: the idle deadline ``ttl`` from now, capped by the hard
    deadline ($min ignores a null one)."""
    return {"$min": [{"$add": ["$$NOW", _ms(ttl)]}, "$absolute_expires_at"]}


def acquire_pipeline(lease_ttl: float, holder: int) -> list[Document]:
    """acquire(): on the live document of the key. Free or lapsed: a new
    token, the lease until ``lease_ttl`` from now, dated now (a takeover
    dates it anew), ``holder`` as its nonce. Held: only ``waiting`` set (a
    no-op write when set already). The caller tells which by the nonce in
    the document after."""
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
    slides the idle deadline, unlocks (``locked_at`` goes with the lock),
    clears ``waiting`` (the change stream sees that)."""
    return [{"$set": {"data": {"$literal": Binary(data)}, "locked_until": None,
                      "locked_at": None, "expires_at": _target(ttl), "waiting": False}}]


def release_pipeline(ttl: float | None, refresh_after: float) -> list[Document]:
    """release(): on the live document carrying the token. Unlocks (as
    commit's), clears ``waiting``, and slides the idle deadline when ``ttl`` is given and that
    moves it by ``refresh_after`` or more."""
    update: Document = {"locked_until": None, "locked_at": None, "waiting": False}
    if ttl is not None:
        update["expires_at"] = _slid(ttl, refresh_after)
    return [{"$set": update}]


def _slid(ttl: float, refresh_after: float) -> Document:
    """Expression: the slid idle deadline, or the current one when the slide
    would move it by less than ``refresh_after``."""
    return {"$cond": [
        {"$gte": [{"$subtract": [_target(ttl), "$expires_at"]}, _ms(refresh_after)]},
        _target(ttl), "$expires_at"]}


def renew_update(lease_ttl: float) -> list[Document]:
    """renew(): on the live document carrying the token and still locked
    (:data:`HELD`). Moves the lease deadline to ``lease_ttl`` from now;
    ``locked_at`` stays the grant's."""
    return [{"$set": {"locked_until": {"$add": ["$$NOW", _ms(lease_ttl)]}}}]


# Filter, with the token's: the lease is still held. A lapsed deadline is
# still held, as no newer acquire took it; null was ended by commit or release.
HELD: Document = {"locked_until": {"$ne": None}}


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
    """read() with a slide: on the live document. Slides the idle deadline
    when that moves it by ``refresh_after`` or more (the document's own write
    lock for the command's length, never the session's lease)."""
    return [{"$set": {"expires_at": _slid(ttl, refresh_after)}}]


# purge_expired(): the ids of up to _PURGE_BATCH expired documents, by the
# expires_at index; then those of them still expired are deleted (each by the
# one purge that deleted it: concurrent purges never count one twice).
EXPIRED: Document = {"$expr": {"$lte": ["$expires_at", "$$NOW"]}}

# discard(): with the key, {_id: key, **LIVE}. Deletes the live document
# whatever its lease and token (an operator revoking a session a request may
# hold); deleted_count says whether there was one. The holder's next fenced
# command matches nothing (LeaseLost), and nothing but create() makes the
# document again, with a token above the holder's.

# Projection of inspect() and scan(): what a Record needs (_id comes along).
# Plain inclusions: a projection expression could turn the dates into epoch
# seconds on the server, but mongoeco refuses those, and a date converts
# exactly here.
RECORD_FIELDS: Document = {"data": 1, "expires_at": 1, "locked_until": 1, "locked_at": 1,
                           "created_at": 1}


def scan_filter(after: str) -> Document:
    """scan(), one batch: the live documents with keys past ``after`` (the
    last key of the batch before; ``""`` at first, below every key), read
    sorted on ``_id`` with a limit: keyset pagination on the ``_id`` index,
    each batch one ``find`` holding no lock between batches."""
    return {"_id": {"$gt": after}, **LIVE}


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


# -- errors ----------------------------------------------------------------------

# Server error codes that mean "out of reach for now", the command not applied:
# host unreachable/not found, exceeded time limit, lock timeout, max time
# expired, network timeout, write conflict, primary stepped down, shutdown in
# progress, not primary, interrupted at shutdown / by a replication state
# change, socket exception, and Cosmos DB's "request rate is large".
_UNAVAILABLE_CODES = frozenset({6, 7, 24, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600,
                                11602, 13435, 13436, 16500})
_UNAUTHORIZED = 13


def _briefly(exc: BaseException) -> str:
    """The class and the message, without the reply document pymongo appends."""
    text = str(exc).split(", full error:")[0].strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _code(exc: BaseException) -> int | None:
    return getattr(exc, "code", None)


# What pymongo's errors mean, first match decides: never sent or refused by
# the server (not applied); sent and never answered, or not replicated
# (maybe applied); the rest is a store that cannot serve as configured.
ERRORS = ErrorTable("MongoDB", [
    Row((ServerSelectionTimeoutError, NotPrimaryError), Meaning.NOT_APPLIED),
    Row((NetworkTimeout, AutoReconnect, ConnectionFailure, WriteConcernError),
        Meaning.MAYBE_APPLIED),
    Row(ExecutionTimeout, Meaning.NOT_APPLIED),
    Row(OperationFailure, Meaning.NOT_APPLIED,
        when=lambda exc: _code(exc) in _UNAVAILABLE_CODES),
    Row(OperationFailure, Meaning.MAYBE_APPLIED,  # transient; the first try unknown
        when=lambda exc: isinstance(exc, OperationFailure)
        and exc.has_error_label("RetryableWriteError")),
    Row(OperationFailure, Meaning.ERROR, when=lambda exc: _code(exc) == _UNAUTHORIZED,
        hint=" (the user needs the actions docs/stores/mongodb.md lists on the collection)"),
    Row(OperationFailure, Meaning.ERROR, ops=frozenset({"setup"}),  # a conflicting index
        hint=" (setup() creates the index {expires_at: 1} named expires_at_ttl with "
             "expireAfterSeconds 0; drop a conflicting one, or pass create_indexes=False)"),
    Row(PyMongoError, Meaning.ERROR),
], describe=_briefly)


def _where(url: str) -> str:
    """host[:port],.../database of a MongoDB URL, for messages (never the
    password)."""
    match = re.fullmatch(r"(mongodb(?:\+srv)?)://(?:[^@/]*@)?([^/?]*)(/[^?]*)?(\?.*)?", url)
    if match is None:
        raise ConfigurationError("a MongoDB URL starts mongodb:// or mongodb+srv://")
    return match.group(2) or "localhost"


class MongoDBStore(Store):
    """Sessions in MongoDB.

    :param url: a ``mongodb://`` or ``mongodb+srv://`` connection string.
    :param database: the database of the collection.
    :param collection: the collection of the sessions.
    :param create_indexes: :meth:`setup` creates the TTL index if missing;
        ``False`` leaves the collection as provisioned (see the module docs).
    :param timeout: seconds before a command, a server selection or a
        connection attempt raises :class:`~sessionware.StoreUnavailable`.
    :param max_connections: the most connections each process's client opens.
    :param watch: wake waiters of other processes by a change stream when the
        deployment has them (a replica set or sharded cluster); ``False``
        polls with backoff instead.
    :param client_options: more keyword arguments for pymongo's client (TLS,
        auth mechanism, read and write concerns...).
    """

    def __init__(
        self,
        url: str,
        *,
        database: str = "sessionware",
        collection: str = "sessions",
        create_indexes: bool = True,
        timeout: float = 5.0,
        max_connections: int = 100,
        watch: bool = True,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        for what, name in (("database", database), ("collection", collection)):
            if not _NAME.fullmatch(name) or (what == "database" and "." in name):
                raise ConfigurationError(f"{what} name {name!r}: letters, digits, _ - .")
        if timeout <= 0 or max_connections < 1:
            raise ConfigurationError("need timeout > 0 and max_connections >= 1")
        self._url = url
        self._where = _where(url)
        self._names = (database, collection)
        self._create_indexes = create_indexes
        self._timeout = timeout
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
        """Create the TTL index on ``expires_at`` if missing (nothing with
        ``create_indexes=False``). Idempotent: MongoDB makes an index that
        exists already a no-op, from any number of processes at once."""
        if not self._create_indexes:
            return
        collection = await self._collection()
        with self._bounded("setup"):
            await collection.create_index("expires_at", name="expires_at_ttl",
                                          expireAfterSeconds=0)

    async def aclose(self) -> None:
        """Stop the watcher and close the client's connections."""
        await self._watcher.aclose()
        await self._client.aclose()

    # -- operations --------------------------------------------------------------

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        holder = random.getrandbits(63)
        collection = await self._collection()
        with self._bounded("acquire"):
            document = await collection.find_one_and_update(
                {"_id": key, **LIVE}, acquire_pipeline(lease_ttl, holder),
                return_document=ReturnDocument.AFTER)
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
        collection = await self._collection()
        with self._bounded("read"):
            if ttl is None:
                document = await collection.find_one({"_id": key, **LIVE}, {"data": 1})
            else:
                document = await collection.find_one_and_update(
                    {"_id": key, **LIVE}, read_pipeline(ttl, refresh_after),
                    projection={"data": 1})
        return None if document is None else bytes(document["data"])

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        if len(data) > _MAX_DATA:
            raise SessionTooLarge(len(data), _MAX_DATA)
        collection = await self._collection()
        with self._bounded("create", duplicate=True) as outcome:
            result = await collection.update_one(
                {"_id": key}, create_pipeline(key, data, ttl, absolute_ttl), upsert=True)
            # upserted: the key was free; modified: an expired document replaced
            outcome.created = result.upserted_id is not None or result.modified_count == 1
        return outcome.created

    async def delete(self, lease: Lease) -> None:
        collection = await self._collection()
        with self._bounded("delete"):
            result = await collection.delete_one(
                {"_id": lease.key, "token": lease.token, **LIVE})
        if result.deleted_count == 0:
            raise lease_lost(lease)
        self._watcher.waiters.wake(lease.key)

    async def discard(self, key: str) -> bool:
        """Delete the live document ``key`` whatever its lease. Waiters of
        this store instance are woken at once; those of other processes find
        the session gone at their next re-check (within ``RECHECK_CAP`` on a
        replica set, ``_POLL_CAP`` otherwise): the change stream carries no
        deletes (:data:`WAKE_EVENTS`)."""
        collection = await self._collection()
        with self._bounded("discard"):
            result = await collection.delete_one({"_id": key, **LIVE})
        self._watcher.waiters.wake(key)
        return result.deleted_count == 1

    async def inspect(self, key: str) -> Record | None:
        collection = await self._collection()
        with self._bounded("inspect"):
            document = await collection.find_one({"_id": key, **LIVE}, RECORD_FIELDS)
        return None if document is None else _record(document)

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        if batch_size < 1:  # MongoDB's limit(0) would be no limit at all
            raise ConfigurationError(f"batch_size {batch_size}: at least 1")
        collection = await self._collection()
        after = ""
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
        """Delete every expired document now, ``_PURGE_BATCH`` at a time
        (``progress`` hears each batch's count); returns how many this call
        deleted. MongoDB's TTL monitor deletes them by itself (about once a
        minute), so the store runs no purge of its own in the background."""
        collection = await self._collection()
        purged = 0
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
        collection = await self._collection()
        with self._bounded(op):
            result = await collection.update_one(
                {"_id": lease.key, "token": lease.token, **LIVE, **(condition or {})}, update)
        if result.matched_count == 0:
            raise lease_lost(lease)
        if wakes:
            self._watcher.waiters.wake(lease.key)

    def _bounded(self, op: str, *, duplicate: bool = False) -> _Command:
        return _Command(op, self._where, time_budget(self._timeout), duplicate=duplicate)

    async def _collection(self) -> AsyncCollection[Document]:
        database, collection = self._names
        return (await self._client.get())[database][collection]

    async def _connected(self) -> AsyncMongoClient[Document]:
        return AsyncMongoClient(self._url, **self._options)  # it connects in the background


def _record(document: Document) -> Record:
    """A document (its RECORD_FIELDS) as a Record."""
    locked_until, locked_at = document["locked_until"], document["locked_at"]
    return Record(document["_id"], bytes(document["data"]), _epoch(document["expires_at"]),
                  None if locked_until is None else _epoch(locked_until),
                  _epoch(document["created_at"]),
                  None if locked_at is None else _epoch(locked_at))


def _epoch(moment: datetime.datetime) -> float:
    """Seconds since the epoch of a BSON date (naive ones are UTC: a client
    made with ``tz_aware=False`` in ``client_options``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _seconds_until(deadline: datetime.datetime | None, lease_ttl: float) -> float:
    """The refusal's hint, by this process's clock (MongoDB's projections
    could compute it on the server's, but it is only a hint: the waiter is
    woken at the release, or re-checks): bounded by a whole lease."""
    if deadline is None:
        return 0.001
    left = (deadline - datetime.datetime.now(datetime.UTC)).total_seconds()
    return min(max(left, 0.001), max(lease_ttl, 0.001))


class _Command:
    """One command's bounds and error translation: ``with`` it around the
    driver call. ``created`` carries create()'s answer (a unique-key race
    lost to another create is ``False``, not an error)."""

    __slots__ = ("_duplicate", "_op", "_timeout", "_where", "created")

    def __init__(self, op: str, where: str, timeout: float, *, duplicate: bool) -> None:
        self._op = op
        self._where = where
        self._timeout = pymongo.timeout(timeout)
        self._duplicate = duplicate
        self.created = False

    def __enter__(self) -> _Command:
        self._timeout.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        self._timeout.__exit__(exc_type, exc, tb)  # type: ignore[arg-type]
        if isinstance(exc, DuplicateKeyError) and self._duplicate:
            # two creates upserted the same key at once: the other one won
            self.created = False
            return True
        if isinstance(exc, PyMongoError):
            raise ERRORS.translate(self._op, self._where, exc) from exc
        return False


class _Watcher(WakeupListener[str]):
    """The one change stream of a store's waiters, on a deployment that has
    change streams (asked at the first wait): it wakes the waiters of each
    changed document's key."""

    # what opening or reading a stream raises when it fails; anything else is
    # a bug, which must end the job rather than be retried for ever
    _LOST = (PyMongoError, StoreError)

    def __init__(self, store: MongoDBStore, *, enabled: bool) -> None:
        super().__init__("sessionware-mongodb-watcher", f"change stream on {store._where}",
                         enabled=enabled)
        self._store = store
        self._probe = Once()
        self._streams: bool | None = None  # whether the deployment has change streams

    async def _may_listen(self) -> bool:
        if self._streams is None:
            try:
                await self._probe.run(self._find_streams)
            except StoreError as exc:
                logger.debug("could not tell whether %s has change streams: %s",
                             self._store, exc)
        return bool(self._streams)

    async def _find_streams(self) -> None:
        """Ask ``hello`` once: a replica set member names its set, a mongos
        says ``isdbgrid``; a standalone server has no change streams."""
        client = await self._store._client.get()
        with self._store._bounded("hello"):
            hello = await client.admin.command("hello")
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
