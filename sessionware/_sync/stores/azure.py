# Generated from sessionware/_async/stores/azure.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""SyncAzureTableStore: sessions in Azure Table storage, one entity per session
(large data in Blob storage: ``azure_blobs``). Design, round trips, Azurite's
gaps, failures: docs/stores/azure.md. One table; one entity per session, times
in ms since the epoch by the client's clock::

    PartitionKey, RowKey  the store key (one partition each); "session"
    Token                 Int64, fencing token: grows at every acquire, never reused
    LockedUntil, LockedAt Int64, lease deadline and when acquire took it; 0: unlocked
    CreatedAt, ExpiresAt  Int64, when create() wrote it; idle deadline (never past the next)
    AbsoluteExpiresAt     Int64, hard deadline; 0: none
    Blob, D00 ... D10     the data: inline, or the blob holding it (``azure_blobs``)

Every change is a write conditioned on the ETag last seen, after checking token,
lease and expiry on what was seen; a 412 reads again. ``acquire``: a read (none
within ``reuse_etags`` of this process's own change), a merge. ``commit``: a
replace; ``release``, ``renew``, a sliding ``read``: a merge; ``delete``,
``discard``: a delete; ``create``: an insert, or a replace of an expired entity.
``scan``, ``purge_expired``: queries. Permissions, as a SAS: table ``raud``;
the blobs' in ``azure_blobs`` (``ss=bt&srt=co&sp=racudl`` in all).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sessionware._sync.io import azure_clients as sdk
from sessionware._sync.io.azure_clients import errors
from sessionware._sync.io.primitives import ThreadLock, sleep
from sessionware._sync.stores._purging import PurgeSchedule
from sessionware._sync.stores.azure_blobs import MAX_INLINE, Blobs, Missing, inline, joined, named
from sessionware._sync.stores.base import SCAN_BATCH, PerProcess, SyncStore, time_budget
from sessionware._sync.waiters import Waiters
from sessionware.exceptions import ConfigurationError, StoreError, StoreUnavailable
from sessionware.stores._errors import SETUP_HINT, ErrorTable, Meaning, Row, lease_lost
from sessionware.stores.answers import Lease, Locked, Record, backoff_delay

__all__ = ["SyncAzureTableStore"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
Clients = tuple[sdk.TableClient, sdk.ContainerClient]

ROW = "session"
# the entity's Int64 properties, by the record's fields
_INT64 = {
    "token": "Token",
    "locked_until": "LockedUntil",
    "locked_at": "LockedAt",
    "expires_at": "ExpiresAt",
    "absolute": "AbsoluteExpiresAt",
    "created_at": "CreatedAt",
}
_POLL_BASE, _POLL_CAP = 0.005, 0.25  # seconds: a waiter's first and longest re-check
_CONFIRM_TICK = 0.001  # seconds: the ETag's resolution on Azurite
_KNOWN_LIMIT = 1024  # entities whose last seen state a store keeps
_KNOWN_BYTES = 32 * 1024 * 1024  # of their data, at most
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")

# Filters (OData), with their parameters (the SDK substitutes @name words).
# purge_expired(): @now, ms. The entities whose idle deadline has passed
# (ExpiresAt is capped by the hard deadline at every write, so this alone
# tells them), with the blob each names, a page of _PURGE_BATCH at a time.
EXPIRED = "ExpiresAt lt @now"
EXPIRED_SELECT = ["PartitionKey", "RowKey", "Blob"]
_PURGE_BATCH = 100
# scan(): @now, ms. The entities live at the scan's start; the store checks
# each page again on its own clock (one may expire while the scan runs).
LIVE = "ExpiresAt gt @now"
_PAGE_LIMIT = 1000  # entities: the most one query answers (Table storage's $top)


class _Conflict(Exception):
    """412: the entity is not as seen (or 404: it is gone); read it again."""


class _Overtaken(_Conflict):
    """412 on a confirming write: applied, then written over (see ``_write``)."""


class _Exists(Exception):
    """409: an entity (a table, a container) with that name exists."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Record:
    """An entity as the store last saw it, with the ETag it had then; ``data``
    is ``None`` until loaded from the blob (or when too large to keep)."""

    etag: str
    token: int
    locked_until: int
    expires_at: int
    absolute: int
    blob: str
    data: bytes | None
    created_at: int
    locked_at: int  # 0 whenever locked_until is
    seen: float = 0.0  # time.monotonic() when seen

    def live(self, now: int) -> bool:
        return self.expires_at > now

    def shown(self, key: str) -> Record:
        """What an operator sees of it (its data loaded)."""
        assert self.data is not None
        locked = bool(self.locked_until)
        return Record(
            key,
            self.data,
            self.expires_at / 1000,
            self.locked_until / 1000 if locked else None,
            self.created_at / 1000,
            self.locked_at / 1000 if locked else None,
        )

    def target(self, now: int, ttl: float) -> int:
        """The idle deadline ``ttl`` from ``now``, capped by the hard one."""
        deadline = now + _ms(ttl)
        return min(deadline, self.absolute) if self.absolute else deadline

    def slid(self, now: int, ttl: float | None, refresh_after: float) -> int | None:
        """The idle deadline a touch at ``now`` sets, if that slides it ``refresh_after``."""
        if ttl is None or self.target(now, ttl) - self.expires_at < _ms(refresh_after):
            return None
        return self.target(now, ttl)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _now() -> int:
    return time.time_ns() // 1_000_000


def _fresh_token() -> int:
    """The clock (µs) and 8 random bits: above any token issued before for
    any key, so a session deleted and created again never meets an old one."""
    return (time.time_ns() // 1000) << 8 | secrets.randbits(8)


def _int(entity: Any, name: str) -> int:
    value = entity.get(name, 0)  # an Int64 comes as an EntityProperty
    return int(getattr(value, "value", value))


def _record(entity: Any) -> _Record:
    blob = named(entity)
    return _Record(
        etag=entity.metadata["etag"],
        blob=blob,
        data=None if blob else joined(entity),
        seen=time.monotonic(),
        **{f: _int(entity, name) for f, name in _INT64.items()},
    )


def _entity(key: str, record: _Record, *fields: str) -> dict[str, Any]:
    """``record``'s ``fields`` as properties (a merge); with none, all (a replace)."""
    entity = {
        "PartitionKey": key,
        "RowKey": ROW,
        **{
            _INT64[field]: sdk.EntityProperty(getattr(record, field), sdk.EdmType.INT64)
            for field in fields or _INT64
        },
    }
    if not fields:
        entity.update(Blob=record.blob, **({} if record.blob else inline(record.data or b"")))
    return entity


# -- errors -----------------------------------------------------------------------


def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _briefly(exc: BaseException) -> str:
    """The class, the service's error code and the first line of its message."""
    lines = str(getattr(exc, "message", None) or exc).strip().splitlines()
    code = _code(exc) if isinstance(exc, errors.AzureError) else ""
    return f"{type(exc).__name__}{f' {code}' if code else ''}: {lines[0] if lines else ''}"


def _status(exc: BaseException) -> int:
    return getattr(exc, "status_code", None) or 0


# What azure-core's errors mean, first match decides. The three conditions
# the operations act on become the private _Conflict, Missing and _Exists. A
# throttled request was not processed; a 5xx or 408 may have been (a 500
# OperationTimedOut); a request that never connected was not sent.
ERRORS = ErrorTable(
    "Azure Storage",
    [
        Row(errors.ResourceModifiedError, _Conflict),
        Row(
            errors.ResourceNotFoundError,
            Meaning.ERROR,
            hint=SETUP_HINT,
            when=lambda exc: _code(exc) in ("TableNotFound", "ContainerNotFound"),
        ),
        Row(errors.ResourceNotFoundError, Missing),
        Row(
            errors.ResourceExistsError,
            _Exists,
            when=lambda exc: _code(exc) not in ("TableBeingDeleted", "ContainerBeingDeleted"),
        ),
        Row(
            (errors.ClientAuthenticationError, errors.HttpResponseError),
            Meaning.ERROR,
            when=lambda exc: (
                isinstance(exc, errors.ClientAuthenticationError) or _status(exc) == 403
            ),
            hint=" (check the account key or SAS and its permissions: see the store's docs)",
        ),
        Row(
            errors.HttpResponseError,
            Meaning.NOT_APPLIED,
            when=lambda exc: _status(exc) in (429, 503) or _code(exc) == "ServerBusy",
        ),
        Row(
            errors.HttpResponseError,
            Meaning.MAYBE_APPLIED,
            when=lambda exc: _status(exc) >= 500 or _status(exc) == 408,
        ),
        Row(errors.HttpResponseError, Meaning.ERROR),
        Row(errors.ServiceRequestError, Meaning.NOT_APPLIED),  # no connection: nothing was sent
        Row((errors.AzureError, OSError), Meaning.MAYBE_APPLIED),  # ServiceResponseError: no answer
    ],
    describe=_briefly,
)


class SyncAzureTableStore(SyncStore):
    """Sessions in Azure Table storage (large data in Blob storage).

    :param connection_string: the storage account's connection string (an
        account key or a SAS; see the docs for the permissions a SAS needs).
    :param table: the table's name (letters and digits, 3 to 63).
    :param container: the blob container's name (lower-case letters, digits
        and single hyphens, 3 to 63).
    :param create: :meth:`setup` creates the table and the container when
        missing; ``False`` when you provision them.
    :param inline_limit: data up to this many bytes stays in the entity
        (at most 704 KiB); more goes to a blob.
    :param timeout: seconds an operation may take, its retries of throttled
        requests included; keep it at or below the middleware's ``store_timeout``.
    :param reuse_etags: seconds for which ``acquire`` trusts the ETag of this
        process's own last change to the entity and writes without reading it
        first; ``0`` always reads.
    :param purge_interval: seconds between background purges (per process,
        jittered).
    :param orphan_age: seconds before the purge deletes a blob that no entity
        names (younger ones may belong to a commit in flight).
    :param connections: the sync face's HTTP connections per client (one per
        request thread is enough).
    """

    def __init__(
        self,
        connection_string: str,
        *,
        table: str = "sessionware",
        container: str = "sessionware",
        create: bool = True,
        inline_limit: int = MAX_INLINE,
        timeout: float = 5.0,
        reuse_etags: float = 2.0,
        purge_interval: float = 60.0,
        orphan_age: float = 300.0,
        connections: int = 32,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(f"table name {table!r}: letters and digits, 3 to 63")
        self._blobs = Blobs(
            container,
            inline_limit=inline_limit,
            orphan_age=orphan_age,
            client=self._container,
            call=self._call,
            io=self._io,
        )
        self._connection_string, self._table, self._create = connection_string, table, create
        self._timeout, self._reuse_etags, self._connections = timeout, reuse_etags, connections
        self._lock = ThreadLock()
        clients = self._open()  # now, to check the connection string
        # for messages: the account and the table endpoint's host (never a key or a SAS)
        self._where = f"{clients[0].account_name} ({urlsplit(clients[0].url).netloc})"
        self._clients: PerProcess[Clients] = PerProcess(
            self, self._reopened, self._close_clients, first=clients
        )
        self._known: dict[str, _Record] = {}
        self._known_bytes = 0
        self._waiters: Waiters[str] = Waiters()
        self._purging = PurgeSchedule(
            "sessionware-azure-purge",
            purge_interval,
            self.purge_expired,
            lambda: self._clients.closed,
            logger,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r}, table={self._table!r})"

    def _open(self) -> Clients:
        try:
            return sdk.open_clients(
                self._connection_string,
                self._table,
                self._blobs.container,
                timeout=self._timeout,
                connections=self._connections,
            )
        except ValueError as exc:
            raise ConfigurationError(f"bad Azure Storage connection string: {exc}") from exc

    def _reopened(self) -> Clients:
        """A forked child's clients; what was seen and awaited was its parent's."""
        self._known, self._known_bytes = {}, 0
        self._waiters.clear()
        return self._open()

    @staticmethod
    def _close_clients(clients: Clients) -> None:
        for client in clients:
            client.close()

    def _container(self) -> sdk.ContainerClient:
        return (self._clients.get())[1]

    def setup(self) -> None:
        """Create the table and the container if missing (idempotent, safe
        from several processes at once); with ``create=False``, nothing."""
        if not self._create:
            return
        table, blobs = self._clients.get()
        for create in (table.create_table, blobs.create_container):
            with contextlib.suppress(_Exists):
                self._call("setup", create)

    def close(self) -> None:
        """Close the clients' connections; wake every waiter."""
        self._clients.close()
        self._waiters.wake_all()

    # -- operations -----------------------------------------------------------

    def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        self._purging.start_if_due()
        record, deadline = self._reusable(key), self._deadline()
        while True:
            if record is None:
                record, now = self._get("acquire", key), _now()
                if record is None or not record.live(now):
                    self._forget(key)
                    return None
                if record.locked_until > now:
                    return Locked(max((record.locked_until - now) / 1000, 0.001))
            now = _now()
            # a takeover of a lapsed lease dates the lease anew
            taken = dataclasses.replace(
                record,
                token=max(record.token + 1, _fresh_token()),
                locked_until=now + _ms(lease_ttl),
                locked_at=now,
            )
            try:
                taken = self._write(
                    "acquire", key, taken, record.etag, "token", "locked_until", "locked_at"
                )
            except _Conflict:  # changed meanwhile (someone else won): look again
                record = None
                self._check(deadline, "acquire")
                continue
            try:
                taken = self._loaded("acquire", taken)
            except Missing:  # locked now: nobody else can have replaced the blob
                raise self._lost_blob(taken.blob) from None
            self._remember(key, taken)
            return Lease(key, taken.token, taken.data or b"")

    def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        blob = self._blobs.stage(lease.key, data)

        def write(record: _Record, now: int) -> _Record | None:
            done = dataclasses.replace(
                record,
                locked_until=0,
                locked_at=0,
                blob=blob,
                data=data,
                expires_at=record.target(now, ttl),
            )
            try:
                return self._write("commit", lease.key, done, record.etag)
            except _Overtaken:
                # Applied, then written over by a writer that held the same
                # ETag: one that saw this commit (a new holder), unless the
                # lease had lapsed (a takeover from the locked entity).
                if _now() < record.locked_until:
                    return None
                raise StoreUnavailable(
                    f"Azure Storage at {self._where}, during commit: written over after the "
                    "lease lapsed (ETags repeated)",
                    maybe_applied=True,
                ) from None

        with self._blobs.kept(blob):
            before = self._fenced("commit", lease, write)
        if before.blob != blob:
            self._blobs.drop(before.blob)
        self._waiters.wake(lease.key)

    def release(
        self, lease: Lease, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> None:
        def write(record: _Record, now: int) -> _Record | None:
            slid = record.slid(now, ttl, refresh_after)
            done = dataclasses.replace(
                record,
                locked_until=0,
                locked_at=0,
                expires_at=record.expires_at if slid is None else slid,
            )
            fields = ("locked_until", "locked_at") + (() if slid is None else ("expires_at",))
            try:
                return self._write("release", lease.key, done, record.etag, *fields)
            except _Overtaken:
                return None  # applied; the write over it took the lock after it, or a lapsed one

        self._fenced("release", lease, write)
        self._waiters.wake(lease.key)

    def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        def write(record: _Record, now: int) -> _Record:
            renewed = dataclasses.replace(record, locked_until=now + _ms(lease_ttl))
            return self._write("renew", lease.key, renewed, record.etag, "locked_until")

        self._fenced("renew", lease, write, held=True)

    def read(
        self, key: str, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> bytes | None:
        self._purging.start_if_due()
        found = self._read_live("read", key)
        if found is None:
            return None
        record, now = found
        slid = record.slid(now, ttl, refresh_after)
        # a conflict: changed meanwhile by a holder, whose commit or release slides it
        with contextlib.suppress(_Conflict):
            if slid is not None:
                record = self._write(
                    "read",
                    key,
                    dataclasses.replace(record, expires_at=slid),
                    record.etag,
                    "expires_at",
                )
        self._remember(key, record)
        return record.data

    def create(
        self, key: str, data: bytes, *, ttl: float, absolute_ttl: float | None = None
    ) -> bool:
        self._purging.start_if_due()
        now = _now()
        blob = self._blobs.stage(key, data)
        record = _Record(
            etag="",
            token=_fresh_token(),
            locked_until=0,
            expires_at=0,
            absolute=now + _ms(absolute_ttl) if absolute_ttl is not None else 0,
            blob=blob,
            data=data,
            created_at=now,
            locked_at=0,
        )
        record = dataclasses.replace(record, expires_at=record.target(now, ttl))
        with self._blobs.kept(blob):
            created = self._insert(key, record)
        if not created:
            self._blobs.drop(blob)
        return created

    def delete(self, lease: Lease) -> None:
        before = self._fenced(
            "delete",
            lease,
            lambda record, now: self._delete_entity("delete", lease.key, record.etag),
        )
        self._gone(lease.key, before.blob)

    def discard(self, key: str) -> bool:
        """Delete the live entity whatever its lock: read it, then delete it
        conditioned on the ETag read (a 412: it changed meanwhile, read it
        again), then its blob. The holder's fenced operations find no entity
        (a conditional update never inserts one) and raise ``LeaseLost``."""
        deadline = self._deadline()
        while True:
            record = self._get("discard", key)
            if record is None or not record.live(_now()):
                self._forget(key)
                return False  # an expired one is the purge's
            try:
                self._delete_entity("discard", key, record.etag)
                break
            except (_Conflict, Missing):  # a commit's blob may be named now: read again
                self._check(deadline, "discard")
        self._gone(key, record.blob)
        return True

    def inspect(self, key: str) -> Record | None:
        """One read (+1 to download a blob); slides nothing, remembers nothing."""
        found = self._read_live("inspect", key)
        return None if found is None else found[0].shown(key)

    def scan(self, *, batch_size: int = SCAN_BATCH) -> Iterator[list[Record]]:
        """A query of the live entities (a scan of the table: no secondary
        index), one page (at most 1000 entities) per batch, followed by its
        continuation; +1 request per entity whose data is in a blob. Pages
        Azure answers empty (it may, on a large table) are not yielded."""
        table, _ = self._clients.get()
        pages = table.query_entities(
            LIVE,
            parameters={"now": _now()},
            results_per_page=min(batch_size, _PAGE_LIMIT),
            **self._io(),
        ).by_page()
        with ERRORS.mapped("scan", self._where):  # the pages' (a download's are already)
            for page in pages:
                batch = [record for entity in page if (record := self._scanned(entity)) is not None]
                if batch:
                    yield batch

    def _scanned(self, entity: Any) -> Record | None:
        """A scan's entity, its blob loaded; ``None``: expired since the query."""
        key, record = str(entity["PartitionKey"]), _record(entity)
        if not record.live(_now()):
            return None
        try:
            return (self._loaded("scan", record)).shown(key)
        except Missing:  # a commit replaced the blob since the page was read
            found = self._read_live("scan", key)
            return None if found is None else found[0].shown(key)

    def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired entity and its blob, then every blob older
        than ``orphan_age`` that no entity names; returns how many entities
        this call deleted. Page by page, each delete conditioned on the ETag
        the entity was found with; ``progress`` hears each page's count."""
        table, _ = self._clients.get()
        purged = 0
        pages = table.query_entities(
            EXPIRED,
            parameters={"now": _now()},
            select=EXPIRED_SELECT,
            results_per_page=_PURGE_BATCH,
            **self._io(),
        ).by_page()
        with ERRORS.mapped("purge", self._where):  # the pages' (a delete's are already)
            for page in pages:
                removed = sum([self._purge_one(entity) for entity in page])
                purged += removed
                if progress is not None and removed:
                    progress(removed)
            self._blobs.sweep(table)
        return purged

    def wait(self, key: str, timeout: float, attempt: int) -> None:
        delay = backoff_delay(attempt, base=_POLL_BASE, cap=_POLL_CAP)
        self._waiters.wait(key, min(timeout, delay))

    # -- the entity -----------------------------------------------------------

    def _fenced(
        self,
        op: str,
        lease: Lease,
        write: Callable[[_Record, int], _Record | None],
        *,
        held: bool = False,
    ) -> _Record:
        """Apply ``write`` to the entity while it carries the lease's token
        (and, with ``held``, is locked); the entity as it was before. The
        entity this process saw last is tried first, without a read; a
        412 (or a seen entity that fails the checks) reads it again."""
        known = self._known.get(lease.key)
        record = known if known is not None and known.token == lease.token else None
        deadline = self._deadline()
        while True:
            fresh = record is None
            if record is None:
                record = self._get(op, lease.key)
            now = _now()
            if (
                record is None
                or record.token != lease.token
                or not record.live(now)
                or (held and not record.locked_until)
            ):
                if not fresh:  # as seen: it may have changed since (a slid expiry)
                    record = None
                    continue
                self._forget(lease.key)
                raise lease_lost(lease)
            try:
                done = write(record, now)
            except (_Conflict, Missing):
                record = None
                self._check(deadline, op)
                continue
            except BaseException:
                self._forget(lease.key)  # unknown now: read it next time
                raise
            if done is not None:
                self._remember(lease.key, done)
            return record

    def _get(self, op: str, key: str) -> _Record | None:
        """The entity, live or expired; ``None`` when there is none."""
        table, _ = self._clients.get()
        try:
            return _record(self._call(op, lambda: table.get_entity(key, ROW, **self._io())))
        except Missing:
            return None

    def _loaded(self, op: str, record: _Record) -> _Record:
        """The record with its data (``Missing``: its blob is gone since)."""
        if record.data is not None:
            return record
        return dataclasses.replace(record, data=self._blobs.load(op, record.blob))

    def _read_live(self, op: str, key: str) -> tuple[_Record, int] | None:
        """The live entity, data loaded, and the time judged by; else ``None``."""
        deadline, missing = self._deadline(), ""
        while True:
            record, now = self._get(op, key), _now()
            if record is None or not record.live(now):
                self._forget(key)
                return None
            if record.blob and record.blob == missing:
                raise self._lost_blob(missing)
            try:
                return self._loaded(op, record), now
            except Missing:  # a commit replaced the blob since the entity was read?
                missing = record.blob
                self._check(deadline, op)

    def _lost_blob(self, name: str) -> StoreError:
        """An entity names a blob deleted by hand, or by too short an ``orphan_age``."""
        return StoreError(f"Azure Storage at {self._where}: the session's blob {name} is missing")

    def _write(self, op: str, key: str, new: _Record, etag: str, *fields: str) -> _Record:
        """Write ``new`` over the entity if its ETag is still ``etag``: its
        ``fields`` merged, or with none the whole entity replaced; ``new``
        with the new ETag. An answer with the same ETag (Azurite, two writes
        in one tick of its clock) is confirmed by writing again a tick later,
        conditioned on it, until the ETag moves; a 412 then raises
        ``_Overtaken``: applied, and written over by a writer that held the
        same ETag (see "Azurite's gaps" in docs/stores/azure.md)."""
        table, _ = self._clients.get()
        mode = sdk.UpdateMode.MERGE if fields else sdk.UpdateMode.REPLACE
        entity, condition, confirming = _entity(key, new, *fields), etag, False
        deadline = self._deadline()
        while True:
            try:
                answer = self._call(
                    op,
                    functools.partial(
                        table.update_entity,
                        entity,
                        mode=mode,
                        etag=condition,
                        match_condition=sdk.MatchConditions.IfNotModified,
                        **self._io(),
                    ),
                )
            except (_Conflict, Missing):  # applied, then written over; or changed meanwhile
                raise (_Overtaken if confirming else _Conflict)() from None
            if str(answer["etag"]) != condition:
                return dataclasses.replace(new, etag=str(answer["etag"]))
            logger.debug(
                "%s of %s… answered with the ETag it was conditioned on: confirming", op, key[:12]
            )
            if time.monotonic() >= deadline:  # an ETag that never moves proves nothing
                raise StoreUnavailable(
                    f"Azure Storage at {self._where}, during {op}: the entity's ETag did not "
                    f"change for {self._timeout}s of writes",
                    maybe_applied=True,
                )
            sleep(_CONFIRM_TICK)
            condition, confirming = str(answer["etag"]), True

    def _insert(self, key: str, record: _Record) -> bool:
        """Insert the entity, or replace an expired one; ``False``: a live one is there."""
        table, _ = self._clients.get()
        deadline = self._deadline()
        while True:
            try:
                # no echo of the entity (up to 1 MiB) in the answer: its ETag is enough
                answer = self._call(
                    "create",
                    lambda: table.create_entity(
                        _entity(key, record), response_preference="return-no-content", **self._io()
                    ),
                )
            except _Exists:
                old = self._get("create", key)
            else:
                self._remember(key, dataclasses.replace(record, etag=str(answer["etag"])))
                return True
            if old is not None and old.live(_now()):
                return False
            with contextlib.suppress(_Conflict):
                if old is not None:  # expired: replaced, with a larger token
                    revived = dataclasses.replace(record, token=max(record.token, old.token + 1))
                    self._remember(key, self._write("create", key, revived, old.etag))
                    self._blobs.drop(old.blob)
                    return True
            self._check(deadline, "create")  # purged, or changed meanwhile: insert again

    def _delete_entity(self, op: str, key: str, etag: str, row: str = ROW) -> None:
        table, _ = self._clients.get()
        self._call(
            op,
            functools.partial(
                table.delete_entity,
                key,
                row,
                etag=etag,
                match_condition=sdk.MatchConditions.IfNotModified,
                **self._io(),
            ),
        )

    def _gone(self, key: str, blob: str) -> None:
        """After the entity's delete: forget it, delete its blob, wake its waiters."""
        self._forget(key)
        self._blobs.drop(blob)
        self._waiters.wake(key)

    def _purge_one(self, entity: Any) -> bool:
        """Delete one expired entity found by the purge, if unchanged since."""
        key = entity["PartitionKey"]
        try:
            self._delete_entity("purge", key, entity.metadata["etag"], entity["RowKey"])
        except (_Conflict, Missing):
            return False  # revived, or purged by another process
        self._forget(key)
        self._blobs.drop(named(entity))
        return True

    # -- calls --------------------------------------------------------------------

    def _call(self, op: str, operation: Callable[[], T]) -> T:
        """Run one request; a throttled or unsent one (known not applied) is
        retried with backoff while ``timeout`` lasts. Errors translated."""
        deadline = self._deadline()
        attempt = 0
        while True:
            if self._clients.closed:
                raise StoreError(f"{self!r} is closed")
            try:
                return operation()
            except (errors.AzureError, OSError) as exc:
                error = ERRORS.translate(op, self._where, exc)
                retry = (
                    isinstance(error, StoreUnavailable)
                    and not error.maybe_applied
                    and not self._clients.closed
                )
                delay = backoff_delay(attempt, base=0.02, cap=0.5)
                if not retry or time.monotonic() + delay >= deadline:
                    raise error from exc
            attempt += 1
            sleep(delay)

    def _io(self) -> dict[str, Any]:
        """One request's transport timeouts: what is left of the store call's time."""
        bound = time_budget(self._timeout)
        return {"connection_timeout": bound, "read_timeout": bound}

    def _deadline(self) -> float:
        return time.monotonic() + time_budget(self._timeout)

    def _check(self, deadline: float, op: str) -> None:
        """Give up re-reading an entity that keeps changing, at ``deadline``."""
        if time.monotonic() >= deadline:
            raise StoreUnavailable(
                f"Azure Storage at {self._where}, during {op}: the entity "
                f"kept changing for {self._timeout}s",
                maybe_applied=False,
            )

    # -- what this process saw ---------------------------------------------------

    def _reusable(self, key: str) -> _Record | None:
        """The entity as last seen, if acquire may skip the read (seen lately, free)."""
        record, now = self._known.get(key), _now()
        if record is None or record.seen + self._reuse_etags < time.monotonic():
            return None
        return record if record.live(now) and record.locked_until <= now else None

    def _remember(self, key: str, record: _Record) -> None:
        """Keep what this process saw of an entity, its data too (a blob's
        name changes with its data, so the ETag vouches for both), within
        ``_KNOWN_LIMIT`` entities and ``_KNOWN_BYTES`` of data: the oldest go."""
        if record.data is not None and len(record.data) > MAX_INLINE:
            record = dataclasses.replace(record, data=None)  # the blob has it
        record = dataclasses.replace(record, seen=time.monotonic())
        with self._lock:
            self._drop_known(key)
            self._known[key] = record
            self._known_bytes += len(record.data or b"")
            while len(self._known) > _KNOWN_LIMIT or self._known_bytes > _KNOWN_BYTES:
                self._drop_known(next(iter(self._known)))

    def _drop_known(self, key: str) -> None:
        dropped = self._known.pop(key, None)
        if dropped is not None:
            self._known_bytes -= len(dropped.data or b"")

    def _forget(self, key: str) -> None:
        with self._lock:
            self._drop_known(key)
