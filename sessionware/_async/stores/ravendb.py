"""RavenDBStore: sessions in RavenDB, one document per session (``pip install
sessionware[ravendb]``: the official client ``ravendb``). Design, round trips, versions,
failures: docs/stores/ravendb.md.

Documents ``COLLECTION/KEY`` of the collection (default ``Sessions``); times in epoch
seconds by the client's clock. Fields: ``data`` (base64), ``token`` (random at create, +1
at every acquire), ``locked_until`` and ``locked_at`` (null: unlocked), ``created_at``,
``expires_at`` (capped by ``absolute_expires_at``), and the metadata ``@expires`` (the
idle deadline as an ISO date) for the database's expiration sweep, which
:meth:`RavenDBStore.setup` turns on. Each write is one ``PATCH`` of one document by a
script (:data:`ACQUIRE`, ...), which RavenDB runs atomically; a refused fenced write
throws :data:`REFUSED`. Reads are one ``GET``; ``scan`` and ``purge_expired`` read the
collection's ids a page at a time (``startsWith``, no index). Waiters are woken by a
release in this process, or by the Changes API (:data:`WATCH_COLLECTION`); else they
poll. The blocking client runs on a thread pool on the async face. Permissions: read and
write on the database; database admin for ``setup()`` (``ConfigureExpirationOperation``).
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from sessionware._async.io.primitives import run_blocking
from sessionware._async.stores._listener import LISTEN_TICK, Run, WakeupListener
from sessionware._async.stores.base import (
    SCAN_BATCH,
    PerProcess,
    Store,
    check_limits,
    time_budget,
)
from sessionware.exceptions import ConfigurationError, SessionTooLarge, StoreError
from sessionware.stores._errors import SETUP_HINT, ErrorTable, Meaning, Row, lease_lost, needs_extra
from sessionware.stores.answers import Lease, Locked, Record, backoff_delay

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

with needs_extra("RavenDBStore", "the RavenDB client (ravendb)", "ravendb"):
    import requests
    import requests.adapters
    import websocket
    from ravendb import DocumentStore  # type: ignore[import-untyped]
    from ravendb.documents.commands.crud import (  # type: ignore[import-untyped]
        GetDocumentsCommand,
    )
    from ravendb.documents.operations.expiration.configuration import (  # type: ignore[import-untyped]
        ExpirationConfiguration,
    )
    from ravendb.documents.operations.expiration.operations import (  # type: ignore[import-untyped]
        ConfigureExpirationOperation,
    )
    from ravendb.documents.operations.patch import (  # type: ignore[import-untyped]
        PatchOperation,
        PatchRequest,
        PatchStatus,
    )
    from ravendb.exceptions import exceptions as raven  # type: ignore[import-untyped]
    from ravendb.exceptions.raven_exceptions import (  # type: ignore[import-untyped]
        ClientVersionMismatchException,
        RavenException,
    )

__all__ = ["RavenDBStore"]

Document = Mapping[str, Any]

DEFAULT_COLLECTION = "Sessions"
_COLLECTION = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# RavenDB takes documents up to 2 GB, but flags any over 5 MB as a performance
# problem (PerformanceHints.Documents.HugeDocumentSizeInMb): a session's data, in
# base64 with the other fields, stays under it
MAX_DATA = 3 * 1024 * 1024
_POLL_BASE = 0.02  # first re-check of a polling waiter after 10-20 ms ...
_POLL_CAP = 0.25  # ... doubling up to 125-250 ms (while the Changes API is not heard)
_SWEEP_EVERY = 60  # seconds between the server's expiration sweeps (its default)

# -- scripts ---------------------------------------------------------------------
# Each is the body of a PATCH on one document, run by the server atomically (the
# document is written only if the script changed it). ``this`` is the document,
# ``args`` the values; every time is args.now, the client's clock, in seconds.
# A fenced script that refuses throws REFUSED: the store reads it as LeaseLost.

REFUSED = "sessionware: refused"

# Functions every script may call. live(): the idle deadline (capped by the hard
# one at every write) is ahead. capped(doc, t): t, or the hard deadline if sooner.
# expire(doc, t): the idle deadline t, in the field and in @expires (for the sweep).
# fenced(): throw REFUSED unless the document is live and carries args.token.
_PRELUDE = f"""
function live(doc) {{ return doc.expires_at > args.now; }}
function capped(doc, t) {{
    var hard = doc.absolute_expires_at;
    return (hard !== null && hard !== undefined && hard < t) ? hard : t;
}}
function expire(doc, t) {{
    doc.expires_at = t;
    doc['@metadata']['@expires'] = new Date(t * 1000).toISOString();
}}
function fenced(doc) {{ if (!live(doc) || doc.token !== args.token) throw '{REFUSED}'; }}
"""

# acquire(): args.now, args.until. Takes the lease of a live document whose lease
# is absent (null) or lapsed: token + 1, locked_at the grant's moment. Otherwise
# changes nothing (answered NotModified with the document as it is: expired, or
# held until its locked_until). A missing document: DocumentDoesNotExist.
ACQUIRE = _PRELUDE + """
if (live(this) && !(this.locked_until > args.now)) {
    this.token += 1; this.locked_until = args.until; this.locked_at = args.now;
}
"""

# commit(): args.now, args.token, args.data, args.ttl. Fenced. Writes the data,
# the idle deadline ttl from now capped by the hard one, and clears the lock.
COMMIT = _PRELUDE + """
fenced(this);
this.data = args.data; this.locked_until = null; this.locked_at = null;
expire(this, capped(this, args.now + args.ttl));
"""

# release(): args.now, args.token, args.ttl (null: no slide), args.refresh_after.
# Fenced. Clears the lock; slides the idle deadline (capped) when that moves it
# forward by refresh_after or more.
RELEASE = _PRELUDE + """
fenced(this);
this.locked_until = null; this.locked_at = null;
if (args.ttl !== null) {
    var target = capped(this, args.now + args.ttl);
    if (target > this.expires_at && target - this.expires_at >= args.refresh_after) {
        expire(this, target);
    }
}
"""

# renew(): args.now, args.token, args.until. Fenced, and only while locked
# (commit and release clear locked_until; a lapsed lease keeps it).
RENEW = _PRELUDE + """
fenced(this);
if (this.locked_until === null || this.locked_until === undefined) throw '""" + REFUSED + """';
this.locked_until = args.until;
"""

# read()'s slide: args.now, args.expires (already capped by the client, which
# read the document). Forward only, on a live document.
SLIDE = _PRELUDE + """
if (live(this) && this.expires_at < args.expires) expire(this, args.expires);
"""

# create(): args.now, args.data, args.token, args.expires, args.absolute, and
# args.collection for a new document. On a missing document (CREATE_MISSING, answered
# Created) or an expired one (CREATE, Patched): a new unlocked record, whose random
# token no earlier lease matches. On a live one nothing: NotModified.
_FILL = """
function fill(doc) {
    doc.data = args.data; doc.token = args.token; doc.locked_until = null;
    doc.locked_at = null; doc.created_at = args.now; doc.absolute_expires_at = args.absolute;
    expire(doc, args.expires);
}
"""
CREATE = _PRELUDE + _FILL + "if (!live(this)) fill(this);"
CREATE_MISSING = _PRELUDE + _FILL + """
this['@metadata'] = {'@collection': args.collection};
fill(this);
"""

# delete(): args.now, args.token. Fenced; removes the document.
DELETE = _PRELUDE + "fenced(this); del(id(this));"

# discard(): args.now. Removes the live document, whatever its lease; an expired
# one throws REFUSED (absent, as a missing one).
DISCARD = _PRELUDE + f"if (!live(this)) throw '{REFUSED}'; del(id(this));"

# purge_expired(), for each expired document a page showed: args.now. Removes it
# if still expired; a live one (revived meanwhile) throws REFUSED.
PURGE = _PRELUDE + f"if (live(this)) throw '{REFUSED}'; del(id(this));"


# The Changes API: a websocket on /databases/DATABASE/changes, one command subscribing
# to the collection's documents; every frame a JSON array of messages (4.1; an object
# from other versions): {"Type": "Confirm", "CommandId": 1} once subscribed, then
# {"Type": "DocumentChange", "Value": {"Id": "COLLECTION/KEY", "Type": "Put"}} for
# each write and delete of a document of the collection.
WATCH_COLLECTION = {"CommandId": 1, "Command": "watch-collection"}  # "Param": the collection


class _Refused(Exception):
    """A script threw :data:`REFUSED`: the document was left as it was."""


def _refused(exc: BaseException) -> bool:
    return REFUSED in str(exc)


def _connect_failed(exc: BaseException) -> bool:
    """Refused or unreachable before anything was sent."""
    return isinstance(exc, requests.ConnectTimeout) or "NewConnectionError" in repr(exc.args)


def _unwrapped(exc: BaseException) -> BaseException:
    """The transport's error the client wrapped in a ``RavenException`` (its
    ``cause``), for the rows of :data:`ERRORS`; else the error itself."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, RavenException) and isinstance(cause, requests.RequestException | OSError):
        return cause
    return exc


def _client_gave_up(exc: BaseException) -> bool:
    """The client's own words: no node answered its topology request, or an error
    answer without a body (a server restarting) that it could not parse."""
    return "topology" in str(exc) or "Failed to parse response" in str(exc)


def _server_unavailable(exc: BaseException) -> bool:
    """The server answered 503 (a database loading after a restart, say)."""
    return "responded with status code: 503" in str(exc)


# A refusal is the store's to read; a connection never made sent nothing, nor did a
# request the server answered with 503; one lost mid-request, a timeout or an
# unreachable cluster may have applied the write.
ERRORS = ErrorTable("RavenDB", reclassify=_unwrapped, rows=[
    Row(RavenException, _Refused, when=_refused),
    Row(raven.DatabaseDoesNotExistException, Meaning.ERROR, hint=SETUP_HINT),
    Row(ClientVersionMismatchException, Meaning.ERROR,
        hint=" (a RavenDB server of another major version: see docs/stores/ravendb.md)"),
    Row((raven.AuthorizationException, raven.AuthenticationException), Meaning.ERROR),
    Row(requests.ConnectionError, Meaning.NOT_APPLIED, when=_connect_failed),
    Row((requests.RequestException, raven.AllTopologyNodesDownException,
         raven.RequestedNodeUnavailableException, OSError), Meaning.MAYBE_APPLIED),
    Row(RuntimeError, Meaning.MAYBE_APPLIED, when=_client_gave_up),
    Row(RavenException, Meaning.NOT_APPLIED, when=_server_unavailable),
    Row(RavenException, Meaning.ERROR),
])


class _Bounded(requests.adapters.HTTPAdapter):
    """The client's HTTP transport with a timeout: the client sends every request
    with none (it waits for ever on a stalled server). Each request takes the
    thread's :attr:`budget`, which :meth:`RavenDBStore._execute` sets."""

    budget = threading.local()

    def send(self, request: Any, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> Any:
        if timeout is None:
            timeout = getattr(self.budget, "seconds", None)
        return super().send(request, stream, timeout, verify, cert, proxies)


class _Client(NamedTuple):
    """This process's document store, the threads the async face calls it on, and
    the listener's own thread (its receive loop never takes one of those)."""

    store: Any
    threads: ThreadPoolExecutor
    listener: ThreadPoolExecutor


def _bytes(document: Document) -> bytes:
    return base64.b64decode(document["data"])


def _live(document: Document | None, now: float) -> bool:
    return document is not None and float(document.get("expires_at") or 0.0) > now


class RavenDBStore(Store):
    """Sessions in a RavenDB database.

    :param url: the server, ``http://host:port`` (``https://`` with ``certificate``).
    :param database: the database, which must exist.
    :param collection: the documents' collection, and their ids' prefix.
    :param certificate: a client certificate (a .pem file) for a secured server.
    :param timeout: seconds before a request is given up.
    :param max_connections: the most concurrent requests per process on the async face.
    :param sweep_every: seconds between the server's expiration sweeps, as :meth:`setup`
        configures the database (``None``: leave its configuration alone).
    :param watch: wake waiters at releases in other processes through the Changes API
        (else they poll).
    """

    def __init__(self, url: str, database: str, *, collection: str = DEFAULT_COLLECTION,
                 certificate: str | None = None, timeout: float = 5.0,
                 max_connections: int = 32, sweep_every: int | None = _SWEEP_EVERY,
                 watch: bool = True) -> None:
        if not _COLLECTION.fullmatch(collection):
            raise ConfigurationError(f"collection {collection!r}: a letter, then up to 63 "
                                     "letters, digits and _")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"url {url!r}: http://HOST:PORT or https://HOST:PORT")
        if not database or "/" in database:
            raise ConfigurationError(f"database name {database!r}")
        if sweep_every is not None and sweep_every < 1:
            raise ConfigurationError("sweep_every: at least 1 second, or None")
        check_limits(timeout, max_connections)
        self._url, self._database, self._collection = url.rstrip("/"), database, collection
        self._certificate, self._timeout, self._sweep_every = certificate, timeout, sweep_every
        self._max_connections = max_connections
        self._where = f"{self._url}/{database}"
        self._client: PerProcess[_Client] = PerProcess(self, self._connected, _close)
        self._watcher = _Watcher(self, enabled=watch)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        """``ravendb://HOST:PORT/DATABASE`` (HTTP) or ``ravendb+https://...``, with
        the keyword options in the query (``?collection=...&certificate=...``)."""
        parts = url.parts
        database = parts.path.strip("/")
        if not parts.hostname or not database or "/" in database:
            raise url.error("write ravendb://HOST:PORT/DATABASE?collection=...")
        scheme = "https" if url.scheme == "ravendb+https" else "http"
        return cls(f"{scheme}://{parts.netloc}", database, **url.options(cls))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r}, collection={self._collection!r})"

    # -- lifecycle --------------------------------------------------------------

    async def setup(self) -> None:
        """Turn on the database's expiration sweep, every ``sweep_every`` seconds
        (``ConfigureExpirationOperation``; idempotent). The database must exist."""
        if self._sweep_every is None:
            return
        operation = ConfigureExpirationOperation(
            ExpirationConfiguration(disabled=False, delete_frequency_in_sec=self._sweep_every))
        await self._execute("setup", lambda store: operation.get_command(store.conventions))

    async def aclose(self) -> None:
        """Stop the Changes API listener, close this process's client; wake every
        local waiter."""
        await self._watcher.aclose()
        await self._client.aclose()

    async def _connected(self) -> _Client:
        store = DocumentStore([self._url], self._database)
        store.conventions.request_timeout = datetime.timedelta(seconds=self._timeout)
        if self._certificate is not None:
            store.certificate_pem_path = self._certificate
        with ERRORS.mapped("connect", self._where):
            store.initialize()
        transport = _Bounded(pool_maxsize=self._max_connections)
        for scheme in ("http://", "https://"):
            store.get_request_executor().http_session.mount(scheme, transport)
        return _Client(store, ThreadPoolExecutor(
            self._max_connections, thread_name_prefix="sessionware-ravendb"),
            ThreadPoolExecutor(1, thread_name_prefix="sessionware-ravendb-changes"))

    # -- operations -----------------------------------------------------------------

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        now = time.time()
        status, document = await self._patch(
            "acquire", key, ACQUIRE, {"now": now, "until": now + lease_ttl})
        if document is None or not _live(document, now):
            return None
        if status is not PatchStatus.PATCHED:  # held; or released meanwhile: re-check at once
            return Locked(max(float(document.get("locked_until") or now) - now, 0.001))
        return Lease(key, int(document["token"]), _bytes(document))

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        _check_size(data)
        await self._fenced("commit", lease, COMMIT, {
            "data": base64.b64encode(data).decode(), "ttl": ttl})
        self._watcher.waiters.wake(lease.key)

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        await self._fenced("release", lease, RELEASE, {"ttl": ttl,
                                                       "refresh_after": refresh_after})
        self._watcher.waiters.wake(lease.key)

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._fenced("renew", lease, RENEW, {"until": time.time() + lease_ttl})

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        document = await self._get("read", key)
        now = time.time()
        if document is None or not _live(document, now):
            return None
        if ttl is not None:
            expires = float(document["expires_at"])
            target = min(now + ttl, document.get("absolute_expires_at") or math.inf)
            if target > expires and target - expires >= refresh_after:
                await self._patch("read", key, SLIDE, {"now": now, "expires": target})
        return _bytes(document)

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        _check_size(data)
        now = time.time()
        absolute = None if absolute_ttl is None else now + absolute_ttl
        values = {"now": now, "data": base64.b64encode(data).decode(),
                  "token": secrets.randbits(48), "absolute": absolute,
                  "expires": min(now + ttl, absolute or math.inf),
                  "collection": self._collection}
        status, _ = await self._patch("create", key, CREATE, values, missing=CREATE_MISSING)
        return status in (PatchStatus.CREATED, PatchStatus.PATCHED)

    async def delete(self, lease: Lease) -> None:
        await self._fenced("delete", lease, DELETE, {})
        self._watcher.waiters.wake(lease.key)

    async def discard(self, key: str) -> bool:
        """One ``PATCH`` that removes the live document (:data:`DISCARD`)."""
        try:
            status, _ = await self._patch("discard", key, DISCARD, {"now": time.time()})
        except _Refused:  # expired
            return False
        finally:  # woken whatever the answer: they re-check and find the session gone
            self._watcher.waiters.wake(key)
        return status is not None

    async def inspect(self, key: str) -> Record | None:
        """One ``GET`` of the document; an expired one is absent."""
        return _record(self._key_of, await self._get("inspect", key), time.time())

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        """The collection's documents by id (``GET docs?startsWith``), a page of
        ``batch_size`` each, after the last id of the page before."""
        async for now, page in self._pages("scan", batch_size):
            batch = [record for document in page
                     if (record := _record(self._key_of, document, now)) is not None]
            if batch:
                yield batch

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """The collection's documents a page at a time, and a ``PATCH`` that removes
        each expired one (:data:`PURGE`). The server's sweep removes them anyway,
        every ``sweep_every`` seconds."""
        purged = 0
        async for now, page in self._pages("purge", SCAN_BATCH):
            removed = 0
            for document in page:
                if not _live(document, now):
                    removed += await self._purge(self._key_of(document))
            purged += removed
            if progress is not None and removed:
                progress(removed)
        return purged

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        await self._watcher.wait(key, timeout, attempt)

    # -- requests --------------------------------------------------------------------

    def _id(self, key: str) -> str:
        return f"{self._collection}/{key}"

    def _key_of(self, document: Document) -> str:
        return str(document["@metadata"]["@id"]).partition("/")[2]

    async def _purge(self, key: str) -> int:
        try:
            status, _ = await self._patch("purge", key, PURGE, {"now": time.time()})
        except _Refused:  # revived meanwhile
            return 0
        return 0 if status is None else 1  # None: removed by the sweep or another purge

    async def _fenced(self, op: str, lease: Lease, script: str,
                      values: dict[str, Any]) -> None:
        try:
            status, _ = await self._patch(op, lease.key, script,
                                          {"now": time.time(), "token": lease.token, **values})
        except _Refused:
            raise lease_lost(lease) from None
        if status is None:  # no such document
            raise lease_lost(lease)

    async def _patch(self, op: str, key: str, script: str, values: dict[str, Any], *,
                     missing: str | None = None) -> tuple[Any, Document | None]:
        """A ``PATCH`` of the document ``key`` by ``script`` (``missing`` for a missing
        document): the status and the document after, or ``(None, None)`` when it is
        missing and no ``missing`` script was given."""
        operation = PatchOperation(self._id(key), None, PatchRequest(script, values),
                                   None if missing is None else PatchRequest(missing, values))
        result = await self._execute(op, lambda store: operation.get_command(
            store, store.conventions, store.get_request_executor().cache))
        if result is None:  # 404: no such document
            return None, None
        return result.status, result.modified_document

    async def _get(self, op: str, key: str) -> Document | None:
        answer = await self._execute(
            op, lambda _: GetDocumentsCommand.from_single_id(self._id(key)))
        return None if answer is None or not answer.results else answer.results[0]

    async def _pages(self, op: str, size: int) -> AsyncIterator[tuple[float, list[Document]]]:
        """The collection's documents a page of ``size`` at a time, in id order."""
        after: str | None = None
        while True:
            now = time.time()
            answer = await self._execute(op, functools.partial(
                _page, f"{self._collection}/", after, size))
            page: list[Document] = [] if answer is None else list(answer.results)
            if page:
                yield now, page
            if len(page) < size:
                return
            after = str(page[-1]["@metadata"]["@id"])

    async def _execute(self, op: str, make: Callable[[Any], Any]) -> Any:
        """The result of the command ``make(document_store)``, within the time budget."""
        seconds = time_budget(self._timeout)

        def execute(store: Any) -> Any:
            command = make(store)
            command.timeout = datetime.timedelta(seconds=seconds)
            _Bounded.budget.seconds = seconds
            store.get_request_executor().execute_command(command)
            return command.result

        return await self._call(op, execute)

    async def _call(self, op: str, call: Callable[[Any], Any]) -> Any:
        """``call(document_store)`` on the client's threads (on the calling thread on
        the sync face), driver errors translated (:class:`_Refused`)."""
        client = await self._client.get()
        with ERRORS.mapped(op, self._where):
            return await run_blocking(client.threads, call, client.store)


async def _close(client: _Client) -> None:
    client.threads.shutdown(wait=False)
    client.listener.shutdown(wait=False)
    client.store.close()


class _Watcher(WakeupListener[str]):
    """The one Changes API subscription of a store's waiters (:data:`WATCH_COLLECTION`):
    each change of a document of the collection (a commit, a release, a delete; an
    acquire too) wakes the waiters of its key, which re-check. Its receive loop runs
    on the client's listener thread (the job's own thread on the sync face)."""

    _LOST = (OSError, websocket.WebSocketException, ValueError, StoreError)

    def __init__(self, store: RavenDBStore, *, enabled: bool) -> None:
        super().__init__("sessionware-ravendb-changes", f"Changes API of {store._where}",
                         enabled=enabled)
        self._store = store

    def _polling_delay(self, attempt: int) -> float:
        return backoff_delay(attempt, base=_POLL_BASE, cap=_POLL_CAP)

    async def _listen_once(self, run: Run) -> bool:
        client = await self._store._client.get()
        await run_blocking(client.listener, self._receive, run)
        return False  # stopped, or the server closed the socket: again after a pause

    def _receive(self, run: Run) -> None:
        """Subscribe and wake waiters until ``run.stop`` is set or the socket ends."""
        store = self._store
        url = f"{store._url.replace('http', 'ws', 1)}/databases/{store._database}/changes"
        sslopt = None if store._certificate is None else {"certfile": store._certificate}
        socket = websocket.create_connection(url, timeout=store._timeout, sslopt=sslopt)
        listening = False
        try:
            socket.send(json.dumps({**WATCH_COLLECTION, "Param": store._collection}))
            socket.settimeout(LISTEN_TICK)
            while not run.stop.is_set():
                try:
                    frame = socket.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if not frame:
                    raise websocket.WebSocketConnectionClosedException("closed by the server")
                for message in _messages(frame):
                    if message.get("Type") == "Confirm" and not listening:
                        listening = True
                        self._began_listening()
                    elif message.get("Type") == "DocumentChange":
                        self.waiters.wake(str(message["Value"]["Id"]).partition("/")[2])
        finally:
            if listening:
                self._stopped_listening()
            socket.close()


def _messages(frame: str | bytes) -> list[dict[str, Any]]:
    """The messages of a Changes API frame: an array of them, or one."""
    decoded = json.loads(frame)
    return decoded if isinstance(decoded, list) else [decoded]


def _page(prefix: str, after: str | None, size: int, store: Any) -> Any:
    return GetDocumentsCommand.from_starts_with(prefix, start_after=after, start=0,
                                                page_size=size)


def _check_size(data: bytes) -> None:
    if len(data) > MAX_DATA:
        raise SessionTooLarge(len(data), MAX_DATA)


def _record(key_of: Callable[[Document], str], document: Document | None,
            now: float) -> Record | None:
    """The document as a :class:`Record`, or ``None`` if absent or expired by ``now``."""
    if document is None or not _live(document, now):
        return None
    return Record(key_of(document), _bytes(document), float(document["expires_at"]),
                  document.get("locked_until"), document.get("created_at"),
                  document.get("locked_at"))
