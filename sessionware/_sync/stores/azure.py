# Generated from sessionware/_async/stores/azure.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""SyncAzureTableStore: sessions in Azure Table storage, one entity per session
(its layout: ``azure_entities``; large data in Blob storage: ``azure_blobs``).
Design, round trips, Azurite's gaps, failures: docs/stores/azure.md.

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
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

from sessionware._sync.io import azure_clients as sdk
from sessionware._sync.io.azure_clients import errors
from sessionware._sync.stores import azure_entities as layout
from sessionware._sync.stores._purging import PurgeSchedule
from sessionware._sync.stores.azure_blobs import MAX_INLINE, Blobs, Missing, named
from sessionware._sync.stores.azure_entities import Entities, EntityRecord
from sessionware._sync.stores.base import SCAN_BATCH, PerProcess, SyncStore, retried, time_budget
from sessionware._sync.waiters import Waiters
from sessionware.exceptions import ConfigurationError, StoreError, StoreUnavailable
from sessionware.stores._errors import SETUP_HINT, ErrorTable, Meaning, Row, lease_lost
from sessionware.stores.answers import Lease, Locked, Record, backoff_delay

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["SyncAzureTableStore"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
Clients = tuple[sdk.TableClient, sdk.ContainerClient]

_POLL_BASE, _POLL_CAP = 0.005, 0.25  # seconds: a waiter's first and longest re-check
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
# the operations act on become Conflict, Missing and Exists (private). A
# throttled request was not processed; a 5xx or 408 may have been (a 500
# OperationTimedOut); a request that never connected was not sent.
ERRORS = ErrorTable(
    "Azure Storage",
    [
        Row(errors.ResourceModifiedError, layout.Conflict),
        Row(
            errors.ResourceNotFoundError,
            Meaning.ERROR,
            hint=SETUP_HINT,
            when=lambda exc: _code(exc) in ("TableNotFound", "ContainerNotFound"),
        ),
        Row(errors.ResourceNotFoundError, Missing),
        Row(
            errors.ResourceExistsError,
            layout.Exists,
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
            client=self._container_client,
            call=self._call,
            io=self._io,
        )
        self._connection_string, self._table, self._create = connection_string, table, create
        self._timeout, self._connections = timeout, connections
        clients = self._open()  # now, to check the connection string
        # for messages: the account and the table endpoint's host (never a key or a SAS)
        self._where = f"{clients[0].account_name} ({urlsplit(clients[0].url).netloc})"
        self._clients: PerProcess[Clients] = PerProcess(
            self, self._reopened, self._close_clients, first=clients
        )
        self._entities = Entities(
            client=self._table_client,
            call=self._call,
            io=self._io,
            deadline=self._deadline,
            check=self._check,
            blobs=self._blobs,
            where=self._where,
            timeout=timeout,
            reuse_etags=reuse_etags,
        )
        self._waiters: Waiters[str] = Waiters()
        self._purging = PurgeSchedule(
            "sessionware-azure-purge",
            purge_interval,
            self.purge_expired,
            lambda: self._clients.closed,
            logger,
        )

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        # a connection string holds '=', ';', '/' and '+' (its key is base64):
        # taken as it is up to the first '?', not parsed as a URL
        connection_string = unquote(url.text[len(url.scheme) + 3 :].partition("?")[0])
        if "=" not in connection_string:
            raise url.error(
                "put the storage account's connection string after azure:// "
                "(e.g. azure://UseDevelopmentStorage=true?table=sessions)"
            )
        return cls(connection_string, **url.options(cls))

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
        self._entities.forget_all()
        self._waiters.clear()
        return self._open()

    @staticmethod
    def _close_clients(clients: Clients) -> None:
        for client in clients:
            client.close()

    def _table_client(self) -> sdk.TableClient:
        return (self._clients.get())[0]

    def _container_client(self) -> sdk.ContainerClient:
        return (self._clients.get())[1]

    def setup(self) -> None:
        """Create the table and the container if missing (idempotent, safe
        from several processes at once); with ``create=False``, nothing."""
        if not self._create:
            return
        table, blobs = self._clients.get()
        for create in (table.create_table, blobs.create_container):
            with contextlib.suppress(layout.Exists):
                self._call("setup", create)

    def close(self) -> None:
        """Close the clients' connections; wake every waiter."""
        self._clients.close()
        self._waiters.wake_all()

    # -- operations -----------------------------------------------------------

    def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        self._purging.start_if_due()
        record, deadline = self._entities.reusable(key), self._deadline()
        while True:
            if record is None:
                record, now = self._entities.get("acquire", key), layout.now_ms()
                if record is None or not record.live(now):
                    self._entities.forget(key)
                    return None
                if record.locked_until > now:
                    return Locked(max((record.locked_until - now) / 1000, 0.001))
            taken = record.taken(layout.now_ms(), lease_ttl)
            try:
                taken = self._entities.write(
                    "acquire", key, taken, record.etag, "token", "locked_until", "locked_at"
                )
            except layout.Conflict:  # changed meanwhile (someone else won): look again
                record = None
                self._check(deadline, "acquire")
                continue
            try:
                taken = self._entities.loaded("acquire", taken)
            except Missing:  # locked now: nobody else can have replaced the blob
                raise self._entities.lost_blob(taken.blob) from None
            self._entities.remember(key, taken)
            return Lease(key, taken.token, taken.data or b"")

    def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        blob = self._blobs.stage(lease.key, data)

        def write(record: EntityRecord, now: int) -> EntityRecord | None:
            done = dataclasses.replace(
                record,
                locked_until=0,
                locked_at=0,
                blob=blob,
                data=data,
                expires_at=record.target(now, ttl),
            )
            try:
                return self._entities.write("commit", lease.key, done, record.etag)
            except layout.Overtaken:
                # Applied, then written over by a writer that held the same
                # ETag: one that saw this commit (a new holder), unless the
                # lease had lapsed (a takeover from the locked entity).
                if layout.now_ms() < record.locked_until:
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
        def write(record: EntityRecord, now: int) -> EntityRecord | None:
            slid = record.slid(now, ttl, refresh_after)
            done = dataclasses.replace(
                record,
                locked_until=0,
                locked_at=0,
                expires_at=record.expires_at if slid is None else slid,
            )
            fields = ("locked_until", "locked_at") + (() if slid is None else ("expires_at",))
            try:
                return self._entities.write("release", lease.key, done, record.etag, *fields)
            except layout.Overtaken:
                return None  # applied; the write over it took the lock after it, or a lapsed one

        self._fenced("release", lease, write)
        self._waiters.wake(lease.key)

    def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        def write(record: EntityRecord, now: int) -> EntityRecord:
            renewed = dataclasses.replace(record, locked_until=now + layout.ms(lease_ttl))
            return self._entities.write("renew", lease.key, renewed, record.etag, "locked_until")

        self._fenced("renew", lease, write, held=True)

    def read(
        self, key: str, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> bytes | None:
        self._purging.start_if_due()
        found = self._entities.read_live("read", key)
        if found is None:
            return None
        record, now = found
        slid = record.slid(now, ttl, refresh_after)
        # a conflict: changed meanwhile by a holder, whose commit or release slides it
        with contextlib.suppress(layout.Conflict):
            if slid is not None:
                record = self._entities.write(
                    "read",
                    key,
                    dataclasses.replace(record, expires_at=slid),
                    record.etag,
                    "expires_at",
                )
        self._entities.remember(key, record)
        return record.data

    def create(
        self, key: str, data: bytes, *, ttl: float, absolute_ttl: float | None = None
    ) -> bool:
        self._purging.start_if_due()
        now = layout.now_ms()
        blob = self._blobs.stage(key, data)
        record = EntityRecord(
            etag="",
            token=layout.fresh_token(),
            locked_until=0,
            expires_at=0,
            absolute=0 if absolute_ttl is None else now + layout.ms(absolute_ttl),
            blob=blob,
            data=data,
            created_at=now,
            locked_at=0,
        )
        record = dataclasses.replace(record, expires_at=record.target(now, ttl))
        with self._blobs.kept(blob):
            created = self._entities.insert(key, record)
        if not created:
            self._blobs.drop(blob)
        return created

    def delete(self, lease: Lease) -> None:
        before = self._fenced(
            "delete",
            lease,
            lambda record, _: self._entities.delete("delete", lease.key, record.etag),
        )
        self._gone(lease.key, before.blob)

    def discard(self, key: str) -> bool:
        """Delete the live entity whatever its lock: read it, then delete it
        conditioned on the ETag read (a 412: it changed meanwhile, read it
        again), then its blob. The holder's fenced operations find no entity
        (a conditional update never inserts one) and raise ``LeaseLost``."""
        deadline = self._deadline()
        while True:
            record = self._entities.get("discard", key)
            if record is None or not record.live(layout.now_ms()):
                self._entities.forget(key)
                return False  # an expired one is the purge's
            try:
                self._entities.delete("discard", key, record.etag)
                break
            except (layout.Conflict, Missing):  # a commit's blob may be named now: read again
                self._check(deadline, "discard")
        self._gone(key, record.blob)
        return True

    def inspect(self, key: str) -> Record | None:
        """One read (+1 to download a blob); slides nothing, remembers nothing."""
        found = self._entities.read_live("inspect", key)
        return None if found is None else found[0].shown(key)

    def scan(self, *, batch_size: int = SCAN_BATCH) -> Iterator[list[Record]]:
        """A query of the live entities (a scan of the table: no secondary
        index), one page (at most 1000 entities) per batch, followed by its
        continuation; +1 request per entity whose data is in a blob. Pages
        Azure answers empty (it may, on a large table) are not yielded."""
        table = self._table_client()
        pages = table.query_entities(
            LIVE,
            parameters={"now": layout.now_ms()},
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
        key, record = str(entity["PartitionKey"]), EntityRecord.of(entity)
        if not record.live(layout.now_ms()):
            return None
        try:
            return (self._entities.loaded("scan", record)).shown(key)
        except Missing:  # a commit replaced the blob since the page was read
            found = self._entities.read_live("scan", key)
            return None if found is None else found[0].shown(key)

    def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired entity and its blob, then every blob older
        than ``orphan_age`` that no entity names; returns how many entities
        this call deleted. Page by page, each delete conditioned on the ETag
        the entity was found with; ``progress`` hears each page's count."""
        table = self._table_client()
        purged = 0
        now = layout.now_ms()
        pages = table.query_entities(
            EXPIRED,
            parameters={"now": now},
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

    def _fenced(
        self,
        op: str,
        lease: Lease,
        write: Callable[[EntityRecord, int], EntityRecord | None],
        *,
        held: bool = False,
    ) -> EntityRecord:
        """Apply ``write`` to the entity while it carries the lease's token
        (and, with ``held``, is locked); the entity as it was before. The
        entity this process saw last is tried first, without a read; a
        412 (or a seen entity that fails the checks) reads it again."""
        record = self._entities.last_seen(lease.key, lease.token)
        deadline = self._deadline()
        while True:
            fresh = record is None
            if record is None:
                record = self._entities.get(op, lease.key)
            now = layout.now_ms()
            if (
                record is None
                or record.token != lease.token
                or not record.live(now)
                or (held and not record.locked_until)
            ):
                if not fresh:  # as seen: it may have changed since (a slid expiry)
                    record = None
                    continue
                self._entities.forget(lease.key)
                raise lease_lost(lease)
            try:
                done = write(record, now)
            except (layout.Conflict, Missing):
                record = None
                self._check(deadline, op)
                continue
            except BaseException:
                self._entities.forget(lease.key)  # unknown now: read it next time
                raise
            if done is not None:
                self._entities.remember(lease.key, done)
            return record

    def _gone(self, key: str, blob: str) -> None:
        """After the entity's delete: forget it, delete its blob, wake its waiters."""
        self._entities.forget(key)
        self._blobs.drop(blob)
        self._waiters.wake(key)

    def _purge_one(self, entity: Any) -> bool:
        """Delete one expired entity found by the purge, if unchanged since."""
        key = entity["PartitionKey"]
        try:
            self._entities.delete("purge", key, entity.metadata["etag"], entity["RowKey"])
        except (layout.Conflict, Missing):
            return False  # revived, or purged by another process
        self._entities.forget(key)
        self._blobs.drop(named(entity))
        return True

    # -- calls --------------------------------------------------------------------

    def _call(self, op: str, operation: Callable[[], T]) -> T:
        """Run one request, errors translated; one known not applied (throttled,
        unsent) is tried again with backoff while ``timeout`` lasts."""

        def once() -> T:
            if self._clients.closed:
                raise StoreError(f"{self!r} is closed")
            with ERRORS.mapped(op, self._where):
                return operation()

        return retried(once, retry=self._retry, timeout=self._timeout, base=0.02, cap=0.5)

    def _retry(self, error: BaseException) -> bool:
        return (
            isinstance(error, StoreUnavailable)
            and not error.maybe_applied
            and not self._clients.closed
        )

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
