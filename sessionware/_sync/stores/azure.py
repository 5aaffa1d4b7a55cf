# Generated from sessionware/_async/stores/azure.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""SyncAzureTableStore: sessions in Azure Table storage, one entity per session;
data too large for the entity in Azure Blob storage. Install with
``pip install sessionware[azure]`` (azure-data-tables, azure-storage-blob,
aiohttp). Design, round trips, Azurite's gaps and failures:
docs/stores/azure.md.

Layout: one table (``table``) and one blob container (``container``), created
by :meth:`SyncAzureTableStore.setup` (or by you: then ``create=False``). One
entity per session, times in ms since the epoch by the client's clock::

    PartitionKey       the store key (a hash of the session id): one partition each
    RowKey             "session"
    Token              Int64, fencing token: grows at every acquire, never reused
    LockedUntil        Int64, lease deadline; 0: unlocked
    LockedAt           Int64, when the holder's acquire took the lease; 0 with LockedUntil
    CreatedAt          Int64, when create() wrote the entity
    ExpiresAt          Int64, idle deadline; never past AbsoluteExpiresAt
    AbsoluteExpiresAt  Int64, hard deadline; 0: none
    Blob               String, the blob holding the data; "": the data is inline
    D00 ... D10        Binary, the data inline, in pieces of at most 64 KiB

Data over ``inline_limit`` bytes goes to a new blob ``<key>/<random>``,
uploaded before the entity names it and deleted once none does.

Operations: every change is a write conditioned on the ETag the store last
saw of the entity, after it checked token, lease and expiry on what it saw;
a 412 makes it read again and decide again.

* ``acquire``: a read (skipped while this process's own last change is at
  most ``reuse_etags`` old), then a conditional merge of the lease.
* ``commit``: a conditional replace (its blob uploaded before, the old one
  deleted after); ``release``, ``renew``: a conditional merge.
* ``delete``: a conditional delete, then its blob.
* ``read``: a read (and its blob); a conditional merge when the expiry slides.
* ``create``: an insert; on a 409, a conditional replace of an expired entity.
* ``discard``: a read, then a conditional delete and its blob; ``inspect``: a
  read; ``scan``: a query of live entities, page by page.
* ``purge_expired``, and a background purge about once per ``purge_interval``
  per process: a query of expired entities, each deleted conditioned on the
  ETag it was found with, then the blobs no entity names older than
  ``orphan_age``.
* ``wait``: woken by a release in this process, else re-checks with backoff.

Permissions, as a SAS: ``ss=bt&srt=co&sp=racudl`` (table read, add, update,
delete; blob read, create, delete; container list for the orphan sweep).
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
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

from sessionware._sync.io.azure_clients import ContainerClient, TableClient, open_clients
from sessionware._sync.io.primitives import ThreadLock, sleep
from sessionware._sync.stores._purging import PurgeSchedule
from sessionware._sync.stores.base import (
    SCAN_BATCH,
    Lease,
    Locked,
    PerProcess,
    Record,
    SyncStore,
    backoff_delay,
    time_budget,
)
from sessionware._sync.waiters import Waiters
from sessionware.exceptions import (
    ConfigurationError,
    LeaseLost,
    SessionTooLarge,
    StoreError,
    StoreUnavailable,
)
from sessionware.stores._errors import SETUP_HINT, ErrorTable, Meaning, Row, lease_lost

try:
    from azure.core import MatchConditions
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from azure.data.tables import EdmType, EntityProperty, UpdateMode
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "SyncAzureTableStore needs azure-data-tables and azure-storage-blob: "
        "pip install sessionware[azure]"
    ) from exc

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["SyncAzureTableStore"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

ROW = "session"
PIECE = 64 * 1024  # bytes: the most one Binary property holds
# pieces inline: Azurite counts the entity's 1 MiB against its base64 form, so
# 11 pieces is what both it and Azure accept
MAX_PIECES = 11
MAX_INLINE = MAX_PIECES * PIECE
MAX_DATA = 64 * 1024 * 1024  # bytes: a limit of ours, for blobs
_PIECE_NAMES = tuple(f"D{i:02}" for i in range(MAX_PIECES))

_PURGE_BATCH = 100  # entities (and blobs) per page of a purge
_POLL_BASE = 0.005  # seconds: the first re-check of a waiter
_POLL_CAP = 0.25  # seconds: the longest between two re-checks
_CONFIRM_TICK = 0.001  # seconds: the ETag's resolution on Azurite
_KNOWN_LIMIT = 1024  # entities whose last seen state a store keeps
_KNOWN_BYTES = 32 * 1024 * 1024  # of their data, at most
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")
_CONTAINER_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")

# Filters (OData), each with its parameters (the SDK substitutes @name words).
# purge_expired(): @now, ms. The entities whose idle deadline has passed
# (ExpiresAt is capped by the hard deadline at every write, so this alone
# tells them); the page names each one's blob to delete after it.
EXPIRED = "ExpiresAt lt @now"
EXPIRED_SELECT = ["PartitionKey", "RowKey", "Blob"]
# purge_expired(), the blob sweep: no parameters. The entities whose data is
# in a blob, and which blob: any other blob in the container is an orphan.
NAMING_A_BLOB = "Blob ne ''"
NAMING_SELECT = ["PartitionKey", "Blob"]
# scan(): @now, ms. The entities live at the scan's start; the store checks
# each page again on its own clock (one may expire while the scan runs).
LIVE = "ExpiresAt gt @now"
_PAGE_LIMIT = 1000  # entities: the most one query answers (Table storage's $top)


class _Conflict(Exception):
    """412: the entity is not as seen (or 404: it is gone); read it again."""


class _Overtaken(_Conflict):
    """412 on a confirming write: the write was applied, and another one,
    conditioned on the same ETag, was applied after it (see ``_write``)."""


class _Missing(Exception):
    """404: no such entity, or blob."""


class _Exists(Exception):
    """409: an entity (a table, a container) with that name exists."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Record:
    """An entity as the store last saw it, with the ETag it had then.
    Times are ms since the epoch; ``data`` is ``None`` until loaded from the
    blob (or when too large to keep)."""

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


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _now() -> int:
    return time.time_ns() // 1_000_000


def _fresh_token() -> int:
    """A token from the clock (microseconds) and 8 random bits: larger than
    any token issued before for any key, so even a session deleted and
    created again never sees an old lease's token again."""
    return (time.time_ns() // 1000) << 8 | secrets.randbits(8)


def _int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)


def _value(entity: dict[str, Any], name: str, default: Any) -> Any:
    value = entity.get(name, default)
    return value.value if isinstance(value, EntityProperty) else value


def _record(entity: Any) -> _Record:
    blob = str(_value(entity, "Blob", ""))
    data = None if blob else b"".join(entity[name] for name in _PIECE_NAMES if name in entity)
    return _Record(
        etag=entity.metadata["etag"],
        token=int(_value(entity, "Token", 0)),
        locked_until=int(_value(entity, "LockedUntil", 0)),
        expires_at=int(_value(entity, "ExpiresAt", 0)),
        absolute=int(_value(entity, "AbsoluteExpiresAt", 0)),
        blob=blob,
        data=data,
        created_at=int(_value(entity, "CreatedAt", 0)),
        locked_at=int(_value(entity, "LockedAt", 0)),
        seen=time.monotonic(),
    )


def _entity(key: str, record: _Record) -> dict[str, Any]:
    """The whole entity (for a create or a replace)."""
    entity: dict[str, Any] = {
        "PartitionKey": key,
        "RowKey": ROW,
        "Token": _int64(record.token),
        "LockedUntil": _int64(record.locked_until),
        "LockedAt": _int64(record.locked_at),
        "ExpiresAt": _int64(record.expires_at),
        "AbsoluteExpiresAt": _int64(record.absolute),
        "CreatedAt": _int64(record.created_at),
        "Blob": record.blob,
    }
    if not record.blob and record.data:
        for index in range(0, len(record.data), PIECE):
            entity[_PIECE_NAMES[index // PIECE]] = record.data[index : index + PIECE]
    return entity


def _not_applied(exc: BaseException) -> bool:
    """Whether a failed write is known to have changed nothing."""
    if isinstance(exc, StoreUnavailable):
        return not exc.maybe_applied
    return isinstance(exc, (LeaseLost, StoreError))


# -- errors -----------------------------------------------------------------------


def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _briefly(exc: BaseException) -> str:
    """The class, the service's error code and the first line of its message."""
    lines = str(getattr(exc, "message", None) or exc).strip().splitlines()
    reason = lines[0] if lines else ""
    code = _code(exc) if isinstance(exc, AzureError) else ""
    return f"{type(exc).__name__}{f' {code}' if code else ''}: {reason}"


def _status(exc: BaseException) -> int:
    return getattr(exc, "status_code", None) or 0


# What azure-core's errors mean, first match decides. The three conditions
# the operations act on become the private _Conflict, _Missing and _Exists. A
# throttled request was not processed; a 5xx or 408 may have been (a 500
# OperationTimedOut); a request that never connected was not sent.
ERRORS = ErrorTable(
    "Azure Storage",
    [
        Row(ResourceModifiedError, _Conflict),
        Row(
            ResourceNotFoundError,
            Meaning.ERROR,
            hint=SETUP_HINT,
            when=lambda exc: _code(exc) in ("TableNotFound", "ContainerNotFound"),
        ),
        Row(ResourceNotFoundError, _Missing),
        Row(
            ResourceExistsError,
            _Exists,
            when=lambda exc: _code(exc) not in ("TableBeingDeleted", "ContainerBeingDeleted"),
        ),
        Row(
            (ClientAuthenticationError, HttpResponseError),
            Meaning.ERROR,
            when=lambda exc: isinstance(exc, ClientAuthenticationError) or _status(exc) == 403,
            hint=" (check the account key or SAS and its permissions: see the store's docs)",
        ),
        Row(
            HttpResponseError,
            Meaning.NOT_APPLIED,
            when=lambda exc: _status(exc) in (429, 503) or _code(exc) == "ServerBusy",
        ),
        Row(
            HttpResponseError,
            Meaning.MAYBE_APPLIED,
            when=lambda exc: _status(exc) >= 500 or _status(exc) == 408,
        ),
        Row(HttpResponseError, Meaning.ERROR),
        Row(ServiceRequestError, Meaning.NOT_APPLIED),  # no connection: nothing was sent
        Row((AzureError, OSError), Meaning.MAYBE_APPLIED),  # ServiceResponseError: no answer
    ],
    describe=_briefly,
)


def _where(table: TableClient) -> str:
    """The account and the table endpoint's host, for messages (never a key
    or a SAS)."""
    return f"{table.account_name} ({urlsplit(table.url).netloc})"


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
        if not _CONTAINER_NAME.fullmatch(container):
            raise ConfigurationError(
                f"container name {container!r}: lower-case letters, digits and hyphens, 3 to 63"
            )
        if not 0 <= inline_limit <= MAX_INLINE:
            raise ConfigurationError(f"inline_limit must be between 0 and {MAX_INLINE} bytes")
        self._connection_string = connection_string
        self._names = (table, container)
        self._create = create
        self._inline_limit = inline_limit
        self._timeout = timeout
        self._reuse_etags = reuse_etags
        self._orphan_age = orphan_age
        self._connections = connections
        self._lock = ThreadLock()
        clients = self._open()  # now, to check the connection string
        self._where = _where(clients[0])
        self._clients: PerProcess[tuple[TableClient, ContainerClient]] = PerProcess(
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
        return f"{type(self).__name__}({self._where!r}, table={self._names[0]!r})"

    def _open(self) -> tuple[TableClient, ContainerClient]:
        try:
            return open_clients(
                self._connection_string,
                *self._names,
                timeout=self._timeout,
                connections=self._connections,
            )
        except ValueError as exc:
            raise ConfigurationError(f"bad Azure Storage connection string: {exc}") from exc

    def _reopened(self) -> tuple[TableClient, ContainerClient]:
        """The clients of a new process (a forked child): what it saw of the
        entities and waited for is its parent's."""
        self._known, self._known_bytes = {}, 0
        self._waiters.clear()
        return self._open()

    @staticmethod
    def _close_clients(clients: tuple[TableClient, ContainerClient]) -> None:
        for client in clients:
            client.close()

    # -- lifecycle ------------------------------------------------------------

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
        record = self._reusable(key)
        deadline = self._deadline()
        while True:
            if record is None:
                record = self._get("acquire", key)
                now = _now()
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
                etag = self._write(
                    "acquire",
                    key,
                    {
                        "Token": _int64(taken.token),
                        "LockedUntil": _int64(taken.locked_until),
                        "LockedAt": _int64(now),
                    },
                    record.etag,
                    UpdateMode.MERGE,
                )
            except _Conflict:  # changed meanwhile (someone else won): look again
                record = None
                self._check(deadline, "acquire")
                continue
            taken = dataclasses.replace(taken, etag=etag)
            try:
                data = self._load("acquire", taken)
            except _Missing:  # locked now: nobody else can have replaced the blob
                raise self._lost_blob(taken.blob) from None
            self._remember(key, dataclasses.replace(taken, data=data))
            return Lease(key, taken.token, data)

    def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        if len(data) > MAX_DATA:
            raise SessionTooLarge(len(data), MAX_DATA)
        blob = self._upload(lease.key, data) if len(data) > self._inline_limit else ""

        def write(record: _Record, now: int) -> _Record | None:
            done = dataclasses.replace(
                record,
                locked_until=0,
                locked_at=0,
                expires_at=record.target(now, ttl),
                blob=blob,
                data=data,
            )
            try:
                etag = self._write(
                    "commit", lease.key, _entity(lease.key, done), record.etag, UpdateMode.REPLACE
                )
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
            return dataclasses.replace(done, etag=etag)

        try:
            before = self._fenced("commit", lease, write)
        except BaseException as exc:
            if blob and _not_applied(exc):
                self._drop_blob(blob)
            raise
        if before.blob and before.blob != blob:
            self._drop_blob(before.blob)
        self._waiters.wake(lease.key)

    def release(
        self, lease: Lease, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> None:
        def write(record: _Record, now: int) -> _Record | None:
            change: dict[str, Any] = {"LockedUntil": _int64(0), "LockedAt": _int64(0)}
            expires_at = record.expires_at
            if ttl is not None and record.target(now, ttl) - expires_at >= _ms(refresh_after):
                expires_at = record.target(now, ttl)
                change["ExpiresAt"] = _int64(expires_at)
            try:
                etag = self._write("release", lease.key, change, record.etag, UpdateMode.MERGE)
            except _Overtaken:
                return None  # applied; the write over it took the lock after it, or a lapsed one
            return dataclasses.replace(
                record, etag=etag, locked_until=0, locked_at=0, expires_at=expires_at
            )

        self._fenced("release", lease, write)
        self._waiters.wake(lease.key)

    def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        def write(record: _Record, now: int) -> _Record:
            locked_until = now + _ms(lease_ttl)
            etag = self._write(
                "renew",
                lease.key,
                {"LockedUntil": _int64(locked_until)},
                record.etag,
                UpdateMode.MERGE,
            )
            return dataclasses.replace(record, etag=etag, locked_until=locked_until)

        self._fenced("renew", lease, write, held=True)

    def read(
        self, key: str, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> bytes | None:
        self._purging.start_if_due()
        found = self._read_live("read", key)
        if found is None:
            return None
        record, now = found
        if ttl is not None and record.target(now, ttl) - record.expires_at >= _ms(refresh_after):
            expires_at = record.target(now, ttl)
            try:
                etag = self._write(
                    "read", key, {"ExpiresAt": _int64(expires_at)}, record.etag, UpdateMode.MERGE
                )
                record = dataclasses.replace(record, etag=etag, expires_at=expires_at)
            except _Conflict:
                pass  # changed meanwhile: by a holder, whose commit or release slides it
        self._remember(key, record)
        assert record.data is not None
        return record.data

    def create(
        self, key: str, data: bytes, *, ttl: float, absolute_ttl: float | None = None
    ) -> bool:
        if len(data) > MAX_DATA:
            raise SessionTooLarge(len(data), MAX_DATA)
        self._purging.start_if_due()
        now = _now()
        absolute = now + _ms(absolute_ttl) if absolute_ttl is not None else 0
        blob = self._upload(key, data) if len(data) > self._inline_limit else ""
        record = _Record(
            etag="",
            token=_fresh_token(),
            locked_until=0,
            expires_at=0,
            absolute=absolute,
            blob=blob,
            data=data,
            created_at=now,
            locked_at=0,
        )
        record = dataclasses.replace(record, expires_at=record.target(now, ttl))
        try:
            created = self._insert(key, record)
        except BaseException as exc:
            if blob and _not_applied(exc):
                self._drop_blob(blob)
            raise
        if not created and blob:
            self._drop_blob(blob)
        return created

    def delete(self, lease: Lease) -> None:
        def write(record: _Record, now: int) -> None:
            table, _ = self._clients.get()
            self._call(
                "delete",
                lambda: table.delete_entity(
                    lease.key,
                    ROW,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                    **self._io(),
                ),
            )

        before = self._fenced("delete", lease, write)
        self._forget(lease.key)
        if before.blob:
            self._drop_blob(before.blob)
        self._waiters.wake(lease.key)

    def discard(self, key: str) -> bool:
        """Delete the live entity whatever its lock: read it, then delete it
        conditioned on the ETag read (a 412: it changed meanwhile, read it
        again), then its blob. The holder's fenced operations find no entity
        (a conditional update never inserts one) and raise ``LeaseLost``."""
        table, _ = self._clients.get()
        deadline = self._deadline()
        while True:
            record = self._get("discard", key)
            if record is None or not record.live(_now()):
                self._forget(key)
                return False  # an expired one is the purge's
            try:
                self._call(
                    "discard",
                    functools.partial(
                        table.delete_entity,
                        key,
                        ROW,
                        etag=record.etag,
                        match_condition=MatchConditions.IfNotModified,
                        **self._io(),
                    ),
                )
                break
            except (_Conflict, _Missing):  # a commit's blob may be named now: read again
                self._check(deadline, "discard")
        self._forget(key)
        if record.blob:
            self._drop_blob(record.blob)
        self._waiters.wake(key)
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
        try:  # the pages' own errors (each download's are translated already)
            for page in pages:
                batch = []
                for entity in page:
                    shown = self._scanned(entity)
                    if shown is not None:
                        batch.append(shown)
                if batch:
                    yield batch
        except (AzureError, OSError) as exc:
            raise ERRORS.translate("scan", self._where, exc) from exc

    def _scanned(self, entity: Any) -> Record | None:
        """One entity of a scan's page, its blob downloaded; ``None`` when it
        expired since the query began."""
        key = str(entity["PartitionKey"])
        record = _record(entity)
        if not record.live(_now()):
            return None
        try:
            data = self._load("scan", record)
        except _Missing:  # a commit replaced the blob since the page was read
            found = self._read_live("scan", key)
            return None if found is None else found[0].shown(key)
        return dataclasses.replace(record, data=data).shown(key)

    def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired entity and its blob, then every blob older
        than ``orphan_age`` that no entity names; returns how many entities
        this call deleted. Page by page, each delete conditioned on the ETag
        the entity was found with; ``progress`` hears each page's count."""
        table, blobs = self._clients.get()
        purged = 0
        pages = table.query_entities(
            EXPIRED,
            parameters={"now": _now()},
            select=EXPIRED_SELECT,
            results_per_page=_PURGE_BATCH,
            **self._io(),
        ).by_page()
        try:  # the pages' own errors (each delete's are translated already)
            for page in pages:
                removed = 0
                for entity in page:
                    removed += self._purge_one(entity)
                purged += removed
                if progress is not None and removed:
                    progress(removed)
            self._sweep_orphans(table, blobs)
        except (AzureError, OSError) as exc:
            raise ERRORS.translate("purge", self._where, exc) from exc
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
            except (_Conflict, _Missing):
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
            entity = self._call(op, lambda: table.get_entity(key, ROW, **self._io()))
        except _Missing:
            return None
        return _record(entity)

    def _read_live(self, op: str, key: str) -> tuple[_Record, int] | None:
        """The live entity with its data loaded, and the time it was judged
        live by; ``None`` when absent or expired."""
        deadline, missing = self._deadline(), ""
        while True:
            record = self._get(op, key)
            now = _now()
            if record is None or not record.live(now):
                self._forget(key)
                return None
            if record.blob and record.blob == missing:
                raise self._lost_blob(missing)
            try:
                data = self._load(op, record)
            except _Missing:  # a commit replaced the blob since the entity was read?
                missing = record.blob
                self._check(deadline, op)
                continue
            return dataclasses.replace(record, data=data), now

    def _lost_blob(self, name: str) -> StoreError:
        """The error for an entity that names a blob that is not there (deleted
        by hand, or by a purge run with an ``orphan_age`` shorter than a commit)."""
        return StoreError(f"Azure Storage at {self._where}: the session's blob {name} is missing")

    def _write(self, op: str, key: str, change: dict[str, Any], etag: str, mode: UpdateMode) -> str:
        """Write ``change`` to the entity if its ETag is still ``etag``; the
        new ETag. An answer with the same ETag (Azurite, two writes in one
        tick of its clock) is confirmed by writing again a tick later,
        conditioned on it, until the ETag moves; a 412 then raises
        ``_Overtaken``: applied, and written over by a writer that held the
        same ETag (see "Azurite's gaps" in docs/stores/azure.md)."""
        table, _ = self._clients.get()
        entity = {"PartitionKey": key, "RowKey": ROW, **change}
        condition, confirming = etag, False
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
                        match_condition=MatchConditions.IfNotModified,
                        **self._io(),
                    ),
                )
            except (_Conflict, _Missing):
                if confirming:  # the first write was applied, and then written over
                    raise _Overtaken() from None
                raise _Conflict() from None  # changed or deleted meanwhile: look again
            new = str(answer["etag"])
            if new != condition:
                return new
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
            condition, confirming = new, True

    def _insert(self, key: str, record: _Record) -> bool:
        """Insert the entity, or replace an expired one (with a token larger
        than its last); ``False`` when a live entity has the key."""
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
                self._remember(key, dataclasses.replace(record, etag=str(answer["etag"])))
                return True
            except _Exists:
                pass
            old = self._get("create", key)
            if old is None:
                self._check(deadline, "create")
                continue  # purged meanwhile: insert again
            if old.live(_now()):
                return False
            revived = dataclasses.replace(record, token=max(record.token, old.token + 1))
            try:
                etag = self._write(
                    "create", key, _entity(key, revived), old.etag, UpdateMode.REPLACE
                )
            except _Conflict:
                self._check(deadline, "create")
                continue
            self._remember(key, dataclasses.replace(revived, etag=etag))
            if old.blob:
                self._drop_blob(old.blob)
            return True

    def _purge_one(self, entity: Any) -> bool:
        """Delete one expired entity found by the purge, if unchanged since."""
        table, _ = self._clients.get()
        key = entity["PartitionKey"]
        try:
            self._call(
                "purge",
                lambda: table.delete_entity(
                    key,
                    entity["RowKey"],
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                    **self._io(),
                ),
            )
        except (_Conflict, _Missing):
            return False  # revived, or purged by another process
        self._forget(key)
        blob = str(_value(entity, "Blob", ""))
        if blob:
            self._drop_blob(blob)
        return True

    # -- blobs ------------------------------------------------------------------

    def _upload(self, key: str, data: bytes) -> str:
        """Write ``data`` to a new blob; its name."""
        _, blobs = self._clients.get()
        name = f"{key}/{secrets.token_hex(8)}"
        self._call("upload", lambda: blobs.upload_blob(name, data, overwrite=False, **self._io()))
        return name

    def _load(self, op: str, record: _Record) -> bytes:
        """The record's data: inline, or its blob (raises ``_Missing`` when
        the blob was deleted since the entity was read)."""
        if record.data is not None:
            return record.data
        _, blobs = self._clients.get()
        download = self._call(op, lambda: blobs.download_blob(record.blob, **self._io()))
        return bytes(self._call(op, download.readall))

    def _drop_blob(self, name: str) -> None:
        """Delete a blob no entity names any more; a failure leaves it to the purge."""
        _, blobs = self._clients.get()
        try:
            self._call("delete blob", lambda: blobs.delete_blob(name, **self._io()))
        except _Missing:
            pass
        except StoreError as exc:
            logger.debug("left blob %s to the purge: %s", name, exc)

    def _sweep_orphans(self, table: TableClient, blobs: ContainerClient) -> None:
        """Delete the blobs older than ``orphan_age`` that no entity names.
        The names are read first: a blob uploaded after that is young."""
        named = set()
        pages = table.query_entities(
            NAMING_A_BLOB, select=NAMING_SELECT, results_per_page=1000, **self._io()
        ).by_page()
        for page in pages:
            for entity in page:
                named.add(str(_value(entity, "Blob", "")))
        cutoff = time.time() - self._orphan_age
        listing = blobs.list_blobs(results_per_page=_PURGE_BATCH, **self._io())
        for blob in listing:
            if blob.name not in named and blob.last_modified.timestamp() < cutoff:
                self._drop_blob(blob.name)

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
            except (AzureError, OSError) as exc:
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
        """The transport's timeouts for one request: what is left of the
        store call in progress (the sync face), at most ``timeout``."""
        bound = time_budget(self._timeout)
        return {"connection_timeout": bound, "read_timeout": bound}

    def _deadline(self) -> float:
        return time.monotonic() + time_budget(self._timeout)

    def _check(self, deadline: float, op: str) -> None:
        """Give up a loop of re-reads at its deadline (entities changing faster
        than the store can read them)."""
        if time.monotonic() >= deadline:
            raise StoreUnavailable(
                f"Azure Storage at {self._where}, during {op}: the entity "
                f"kept changing for {self._timeout}s",
                maybe_applied=False,
            )

    # -- what this process saw ---------------------------------------------------

    def _reusable(self, key: str) -> _Record | None:
        """The entity as this process saw it last, if it may be acquired
        without a read: seen lately, live and not locked as seen."""
        record = self._known.get(key)
        if record is None or record.seen + self._reuse_etags < time.monotonic():
            return None
        now = _now()
        if not record.live(now) or record.locked_until > now:
            return None
        return record

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
