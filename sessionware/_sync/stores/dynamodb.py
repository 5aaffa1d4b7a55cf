# Generated from sessionware/_async/stores/dynamodb.py by scripts/unasync.py: do not edit.
# Change the async source and run `python scripts/unasync.py`.
"""SyncDynamoDBStore: sessions in Amazon DynamoDB, one item per session, waiters
woken locally and by polling. Install with ``pip install sessionware[dynamodb]``
(aiobotocore and botocore); credentials and region come from the standard AWS
chain unless given. Design, costs, clock skew and failures:
docs/stores/dynamodb.md.

One table, partition key ``key`` (string), no sort key, no index, TTL on
``ttl``, created by :meth:`SyncDynamoDBStore.setup` (only checked with
``create_table=False``). One item per session, times in epoch seconds by the
client's clock (``time.time()``)::

    key                  S  store key (a hash of the session id)
    data                 B  the serialized session
    token                N  fencing token: random at create, +1 at every acquire
    locked_until         N  lease deadline; absent: unlocked
    locked_at            N  when the holder's acquire took the lease; absent with locked_until
    created_at           N  when create() put the item
    expires_at           N  idle deadline, never past the next
    absolute_expires_at  N  hard deadline; absent: none
    ttl                  N  expires_at rounded up to whole seconds: the table's TTL attribute

Operations, each one request conditioned on the item (:data:`LIVE`:
``expires_at > now``):

* ``acquire``: ``UpdateItem`` (:data:`ACQUIRE_CONDITION`); a refusal answers
  the item as it was (``ALL_OLD``): the holder's deadline, or no session.
* ``commit``, ``release``, ``renew``, ``delete``: ``UpdateItem`` (``DeleteItem``)
  conditioned on the token (:data:`FENCED`; ``renew`` also on the lease held).
* ``read``: a strongly consistent ``GetItem``; a due slide of the expiry is
  a second request (``UpdateItem``).
* ``create``: ``PutItem`` that replaces only an absent or expired item.
* ``discard``: ``DeleteItem`` of the live item, whatever its token;
  ``inspect``: ``GetItem``; ``scan``: a strongly consistent ``Scan``, page by page.
* ``purge_expired``: a ``Scan`` and a conditional ``DeleteItem`` per expired
  item (DynamoDB's TTL deletes them anyway, lazily; no background purge).
* ``wait``: woken by a release in this process, else polls with backoff.

Permissions: ``dynamodb:GetItem``, ``PutItem``, ``UpdateItem``,
``DeleteItem``, ``DescribeTable`` on the table; ``CreateTable``,
``DescribeTimeToLive``, ``UpdateTimeToLive`` for ``setup()`` with
``create_table=True``; ``Scan`` for ``purge_expired()`` and ``scan()``.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

from sessionware._sync.io.primitives import ThreadLock, sleep
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
    SessionTooLarge,
    StoreError,
)
from sessionware.stores._errors import SETUP_HINT, ErrorTable, Meaning, Row, lease_lost

try:
    from botocore.exceptions import (  # type: ignore[import-untyped]
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
    )

    from sessionware._sync.io.dynamodb_client import close_client, home, open_client
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "SyncDynamoDBStore needs aiobotocore and botocore: pip install sessionware[dynamodb]"
    ) from exc

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

__all__ = ["SyncDynamoDBStore"]

DEFAULT_TABLE = "sessionware_sessions"
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")  # DynamoDB's rule for table names

# DynamoDB's item limit is 400 KB, attribute names and values included; the
# other attributes and their names take under 300 bytes, 1 KB is set aside.
ITEM_LIMIT = 400 * 1024
MAX_DATA = ITEM_LIMIT - 1024

_POLL_BASE = 0.05  # first re-check of a waiter after 25-50 ms ...
_POLL_CAP = 0.5  # ... doubling up to 250-500 ms
_THROTTLE_BASE = 0.025  # backoff of a throttled request: 12-25 ms, doubling ...
_THROTTLE_CAP = 1.0  # ... up to 0.5-1 s, within the operation's bound
_ACTIVE_POLL = 0.5  # seconds between looks at a table being created
_PURGE_PAGE = 500  # items per Scan page of purge_expired
_REMEMBERED = 10_000  # most leases whose deadlines the store remembers (see _Held)

# The low-level API, botocore's on both faces: attribute values typed as
# {"S": ...}, {"N": "..."} (numbers as strings), {"B": bytes}.
Item = Mapping[str, Mapping[str, Any]]

# -- expressions ---------------------------------------------------------------
# Attribute names go through ExpressionAttributeNames (#key -> key: several
# are DynamoDB reserved words); each request carries only the names its
# expressions use (DynamoDB rejects unused ones). Values are :placeholders;
# :now is the client's wall clock, epoch seconds.

NAMES = {
    "#key": "key",
    "#data": "data",
    "#token": "token",
    "#locked": "locked_until",
    "#locked_at": "locked_at",
    "#created": "created_at",
    "#expires": "expires_at",
    "#absolute": "absolute_expires_at",
    "#ttl": "ttl",
}

# A live item: it exists and its (capped) idle deadline is ahead.
LIVE = "attribute_exists(#key) AND #expires > :now"

# acquire(): :now, :until (lease deadline), :one. Takes the lease of a live
# item whose lease is free (absent) or lapsed; the token grows by one and
# locked_at is the grant's moment (a takeover dates the lease anew). Never
# creates an item. On a failed condition, ALL_OLD answers the item as it was:
# none (absent), expired, or held (locked_until is the holder's deadline).
ACQUIRE_CONDITION = f"{LIVE} AND (attribute_not_exists(#locked) OR #locked <= :now)"
ACQUIRE_UPDATE = "SET #token = #token + :one, #locked = :until, #locked_at = :now"

# commit(): :now, :token, :data, :expires, :ttl, :expires (also the cap
# check). Writes data, slides the idle deadline to :expires and unlocks,
# when the live item carries :token and :expires is not past its hard
# deadline (the store caps :expires by the deadline it learned at acquire;
# a lease it does not know is retried with the cap the failure answered).
# Every unlock removes locked_at with locked_until: they go together.
FENCED = f"{LIVE} AND #token = :token"
CAPPED = "(attribute_not_exists(#absolute) OR #absolute >= :expires)"
COMMIT_CONDITION = f"{FENCED} AND {CAPPED}"
COMMIT_UPDATE = "SET #data = :data, #expires = :expires, #ttl = :ttl REMOVE #locked, #locked_at"

# release(): :now, :token, and with a slide :expires, :ttl. Unlocks (and
# slides the idle deadline, capped as commit's) when the live item carries
# :token.
RELEASE_CONDITION = FENCED
RELEASE_UPDATE = "REMOVE #locked, #locked_at"
RELEASE_SLIDE_CONDITION = COMMIT_CONDITION
RELEASE_SLIDE_UPDATE = "SET #expires = :expires, #ttl = :ttl REMOVE #locked, #locked_at"

# renew(): :now, :token, :until. Moves the lease deadline when the live item
# carries :token and is still locked: commit and release remove
# locked_until, a lapsed lease keeps it (still held: no newer holder).
# locked_at stays: a renewal extends the lease, it does not grant one.
RENEW_CONDITION = f"{FENCED} AND attribute_exists(#locked)"
RENEW_UPDATE = "SET #locked = :until"

# delete(): :now, :token. Removes the live item that carries :token.
DELETE_CONDITION = FENCED

# read()'s slide: :now, :expires, :ttl. Moves a live item's idle deadline
# forward to :expires (capped as commit's), never back; a lock it leaves alone.
SLIDE_CONDITION = f"{LIVE} AND #expires < :expires AND {CAPPED}"
SLIDE_UPDATE = "SET #expires = :expires, #ttl = :ttl"

# create(): :now. Puts an unlocked item, created_at :now, unless a live one
# has the key; an expired one is replaced (with a new random token: a lease
# of the old session never matches).
CREATE_CONDITION = "attribute_not_exists(#key) OR #expires <= :now"

# purge_expired(): :now. The Scan's filter finds expired items; each delete
# removes its item only if it is still expired (a create may have revived it)
# and still there (another purge may have removed it first).
EXPIRED = "#expires <= :now"
PURGE_CONDITION = f"attribute_exists(#key) AND {EXPIRED}"
PURGE_PROJECTION = "#key, #expires"

# The operators' operations: none is fenced, none takes or waits for a lock.
# discard(): :now. Removes the live item whatever its lock; refused (so
# answered False) when there is none or it expired. Its holder's next fenced
# write finds no item (LeaseLost), and a create afterwards draws a new random
# token, so that lease never matches again.
DISCARD_CONDITION = LIVE

# inspect() and scan(): the attributes a Record is made of (token, ttl and
# the hard deadline stay behind: expires_at is already capped by it). A
# projection trims the answer, not the read units: those count the whole item.
# An attribute the item lacks (locked_until and locked_at while unlocked) is
# left out of the answer, not an error.
RECORD_PROJECTION = "#key, #data, #expires, #locked, #locked_at, #created"

# scan(): :now. Live items only. DynamoDB filters after it reads a page of
# Limit items, so a page may hold fewer (none) and still cost the units of
# every item it read.
SCAN_FILTER = "#expires > :now"

_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "TransactionConflictException",
    }
)
_SERVER_FAULTS = frozenset({"InternalServerError", "ServiceUnavailable"})
# found before anything is sent: no retry or wait helps
_MISCONFIGURED = (NoCredentialsError, PartialCredentialsError, NoRegionError, ParamValidationError)


def _code(exc: BaseException) -> str:
    # botocore's errors may carry response=None (a read timeout, say)
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status or 0)


# What botocore's errors mean, first match decides. A throttled request was
# refused before it ran; a server fault or a connection lost mid-request may
# have been applied; a request that never connected was not.
ERRORS = ErrorTable(
    "DynamoDB",
    [
        Row(ClientError, Meaning.NOT_APPLIED, when=lambda exc: _code(exc) in _THROTTLED),
        Row(
            ClientError,
            Meaning.MAYBE_APPLIED,
            when=lambda exc: _code(exc) in _SERVER_FAULTS or _status(exc) >= 500,
        ),
        Row(
            ClientError,
            Meaning.ERROR,
            hint=SETUP_HINT,
            when=lambda exc: _code(exc) == "ResourceNotFoundException",
        ),
        Row((ClientError, *_MISCONFIGURED), Meaning.ERROR),
        Row((EndpointConnectionError, ConnectTimeoutError), Meaning.NOT_APPLIED),
        Row((BotoCoreError, OSError), Meaning.MAYBE_APPLIED),
    ],
)


def _names(*expressions: str) -> dict[str, str]:
    used = set(re.findall(r"#\w+", " ".join(expressions)))
    return {name: NAMES[name] for name in sorted(used)}


def _number(value: float | int) -> dict[str, str]:
    return {"N": str(value) if isinstance(value, int) else f"{value:.6f}"}


def _deadline(expires: float) -> dict[str, Any]:
    """The values of a new idle deadline: itself and its TTL attribute."""
    return {":expires": _number(expires), ":ttl": _number(math.ceil(expires))}


def _float(item: Item, name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value["N"])


class _Refused(Exception):
    """A condition failed; ``item`` is the item as it was (``ALL_OLD``), if any."""

    def __init__(self, item: Item | None) -> None:
        super().__init__("conditional check failed")
        self.item = item


class _Held:
    """What the store learned of its own leases at acquire: each one's idle
    and hard deadlines, so that a release decides its throttled slide and a
    commit caps its deadline without asking DynamoDB (an update expression
    has no ``min``, nor a conditional ``SET``). At most ``_REMEMBERED``, the
    oldest forgotten first; a lease not remembered still works (see
    :data:`COMMIT_CONDITION`)."""

    def __init__(self) -> None:
        self._deadlines: dict[tuple[str, int], tuple[float | None, float | None]] = {}
        self._lock = ThreadLock()

    def remember(self, lease: Lease, item: Item) -> None:
        with self._lock:
            if len(self._deadlines) >= _REMEMBERED:
                del self._deadlines[next(iter(self._deadlines))]
            self._deadlines[lease.key, lease.token] = (
                _float(item, "expires_at"),
                _float(item, "absolute_expires_at"),
            )

    def deadlines(self, lease: Lease) -> tuple[float | None, float | None] | None:
        """(idle, hard) deadline of ``lease``, or ``None`` if not remembered."""
        return self._deadlines.get((lease.key, lease.token))

    def forget(self, lease: Lease) -> None:
        with self._lock:
            self._deadlines.pop((lease.key, lease.token), None)


class SyncDynamoDBStore(SyncStore):
    """Sessions in a DynamoDB table.

    :param table: the table name.
    :param endpoint_url: where DynamoDB is (default: the region's endpoint);
        DynamoDB Local, say, at ``http://127.0.0.1:8000``.
    :param region_name: the AWS region (default: the standard chain's).
    :param aws_access_key_id, aws_secret_access_key, aws_session_token:
        credentials (default: the standard chain's).
    :param create_table: :meth:`setup` creates the table (on-demand billing)
        and enables its TTL if missing (``True``), or only checks that the
        table exists (``False``: infrastructure as code; see the docs for the
        table's spec).
    :param timeout: seconds before a connection attempt or an answer is
        given up (:class:`~sessionware.StoreUnavailable`); throttled requests
        are retried within it.
    :param max_connections: the HTTP connections each process keeps open to
        DynamoDB at most.
    """

    def __init__(
        self,
        table: str = DEFAULT_TABLE,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        create_table: bool = True,
        timeout: float = 5.0,
        max_connections: int = 50,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(
                f"table name {table!r}: use 3 to 255 letters, digits, _, . and -"
            )
        if timeout <= 0 or max_connections < 1:
            raise ConfigurationError("need timeout > 0 and max_connections >= 1")
        self._table = table
        self._where = f"{endpoint_url or region_name or 'the default region'}/{table}"
        self._options = {
            key: value
            for key, value in (
                ("endpoint_url", endpoint_url),
                ("region_name", region_name),
                ("aws_access_key_id", aws_access_key_id),
                ("aws_secret_access_key", aws_secret_access_key),
                ("aws_session_token", aws_session_token),
            )
            if value is not None
        }
        # botocore's retries are off: the store retries within its own bound.
        # No parameter validation: the store's requests have fixed shapes
        # (the tests send each one), and it costs a sixth of the client's
        # CPU per request.
        self._config = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "max_pool_connections": max_connections,
            "parameter_validation": False,
        }
        self._create_table = create_table
        self._timeout = timeout
        # on the async face a client belongs to its event loop too
        self._client: PerProcess[Any] = PerProcess(self, self._connected, close_client, place=home)
        self._held = _Held()
        self._waiters: Waiters[str] = Waiters()

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        parts, query = url.parts, url.query
        table = unquote(parts.netloc)
        if not table or parts.path.strip("/"):
            raise url.error("write dynamodb://TABLE?region=...&endpoint_url=...")
        if "region" in query:  # the short name, as in the URLs people write
            if "region_name" in query:
                raise url.error("give region or region_name, not both")
            query["region_name"] = query.pop("region")
        return cls(table, **url.options(cls, query))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._table!r}, at {self._where!r})"

    # -- lifecycle ------------------------------------------------------------

    def setup(self) -> None:
        """Create the table (on-demand, partition key ``key``) and enable its
        TTL on ``ttl``, if missing, and wait until it is ACTIVE (with
        ``create_table=False``: check that it exists). Idempotent, and safe
        when several processes set up at the same moment."""
        status = self._table_status()
        if status is None:
            if not self._create_table:
                raise StoreError(
                    f"DynamoDB at {self._where}: no table {self._table!r} "
                    "(create it as the store's docs say, or create_table=True)"
                )
            self._create()
            status = self._table_status()
        while status != "ACTIVE":
            sleep(_ACTIVE_POLL)
            status = self._table_status()
        if self._create_table:
            self._enable_ttl()

    def close(self) -> None:
        """Close this process's client; wake every local waiter."""
        self._client.close()
        self._waiters.wake_all()

    def _table_status(self) -> str | None:
        try:
            answer = self._call("setup", "describe_table", {"TableName": self._table})
        except StoreError as exc:
            if _code(exc.__cause__ or exc) == "ResourceNotFoundException":
                return None
            raise
        return str(answer["Table"]["TableStatus"])

    def _create(self) -> None:
        try:
            self._call(
                "setup",
                "create_table",
                {
                    "TableName": self._table,
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
                },
            )
        except StoreError as exc:
            if _code(exc.__cause__ or exc) != "ResourceInUseException":
                raise  # in use: another process creates it at the same moment

    def _enable_ttl(self) -> None:
        answer = self._call("setup", "describe_time_to_live", {"TableName": self._table})
        if answer["TimeToLiveDescription"]["TimeToLiveStatus"] in ("ENABLED", "ENABLING"):
            return
        try:
            self._call(
                "setup",
                "update_time_to_live",
                {
                    "TableName": self._table,
                    "TimeToLiveSpecification": {"Enabled": True, "AttributeName": "ttl"},
                },
            )
        except StoreError as exc:
            # another process enabled it at the same moment
            if "already enabled" not in str(exc).lower():
                raise

    # -- operations -----------------------------------------------------------

    def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        now = time.time()
        try:
            answer = self._update(
                "acquire",
                key,
                ACQUIRE_CONDITION,
                ACQUIRE_UPDATE,
                {":now": _number(now), ":until": _number(now + lease_ttl), ":one": _number(1)},
                returns="ALL_NEW",
            )
        except _Refused as refused:
            return _refusal(refused.item, now)
        item = answer["Attributes"]
        lease = Lease(key, int(item["token"]["N"]), bytes(item["data"]["B"]))
        self._held.remember(lease, item)
        return lease

    def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        if len(data) > MAX_DATA:
            raise SessionTooLarge(len(data), MAX_DATA)
        self._capped("commit", lease, COMMIT_CONDITION, COMMIT_UPDATE, ttl, {":data": {"B": data}})
        self._released(lease)

    def release(
        self, lease: Lease, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> None:
        if ttl is not None and self._slide_due(lease, ttl, refresh_after):
            self._capped("release", lease, RELEASE_SLIDE_CONDITION, RELEASE_SLIDE_UPDATE, ttl, {})
        else:
            self._fenced("release", lease, RELEASE_CONDITION, RELEASE_UPDATE, {})
        self._released(lease)

    def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        self._fenced(
            "renew",
            lease,
            RENEW_CONDITION,
            RENEW_UPDATE,
            {":until": _number(time.time() + lease_ttl)},
        )

    def read(
        self, key: str, *, ttl: float | None = None, refresh_after: float = 0.0
    ) -> bytes | None:
        answer = self._call(
            "read",
            "get_item",
            {"TableName": self._table, "Key": {"key": {"S": key}}, "ConsistentRead": True},
        )
        item = answer.get("Item")
        now = time.time()
        expires = None if item is None else _float(item, "expires_at")
        if item is None or expires is None or expires <= now:
            return None
        if ttl is not None:
            target = _capped_deadline(now + ttl, _float(item, "absolute_expires_at"))
            if target - expires >= refresh_after and target > expires:
                # refused: slid by another request meanwhile, or gone
                with contextlib.suppress(_Refused):
                    self._update(
                        "read",
                        key,
                        SLIDE_CONDITION,
                        SLIDE_UPDATE,
                        {":now": _number(now), **_deadline(target)},
                    )
        return bytes(item["data"]["B"])

    def create(
        self, key: str, data: bytes, *, ttl: float, absolute_ttl: float | None = None
    ) -> bool:
        if len(data) > MAX_DATA:
            raise SessionTooLarge(len(data), MAX_DATA)
        now = time.time()
        absolute = None if absolute_ttl is None else now + absolute_ttl
        expires = _capped_deadline(now + ttl, absolute)
        item: dict[str, Any] = {
            "key": {"S": key},
            "data": {"B": data},
            # random: a lease of a deleted or expired session under this key
            # never matches its successor's
            "token": _number(secrets.randbits(62)),
            "expires_at": _number(expires),
            "ttl": _number(math.ceil(expires)),
            "created_at": _number(now),
        }
        if absolute is not None:
            item["absolute_expires_at"] = _number(absolute)
        try:
            self._call(
                "create",
                "put_item",
                {
                    "TableName": self._table,
                    "Item": item,
                    "ConditionExpression": CREATE_CONDITION,
                    "ExpressionAttributeNames": _names(CREATE_CONDITION),
                    "ExpressionAttributeValues": {":now": _number(now)},
                },
            )
        except _Refused:
            return False
        return True

    def delete(self, lease: Lease) -> None:
        try:
            self._delete("delete", lease.key, DELETE_CONDITION, {":token": _number(lease.token)})
        except _Refused:
            raise lease_lost(lease) from None
        self._released(lease)

    def discard(self, key: str) -> bool:
        """One ``DeleteItem`` conditioned on a live item (:data:`DISCARD_CONDITION`)."""
        try:
            self._delete("discard", key, DISCARD_CONDITION, {})
        except _Refused:
            return False  # absent, or expired
        finally:
            # woken whatever the answer: they re-check and find the session gone
            self._waiters.wake(key)
        return True

    def inspect(self, key: str) -> Record | None:
        """One strongly consistent ``GetItem``; an expired item is absent."""
        answer = self._call(
            "inspect",
            "get_item",
            {
                "TableName": self._table,
                "Key": {"key": {"S": key}},
                "ConsistentRead": True,
                "ProjectionExpression": RECORD_PROJECTION,
                "ExpressionAttributeNames": _names(RECORD_PROJECTION),
            },
        )
        item = answer.get("Item")
        return None if item is None else _record(item, time.time())

    def scan(self, *, batch_size: int = SCAN_BATCH) -> Iterator[list[Record]]:
        """A strongly consistent ``Scan`` of the whole table, one page of
        ``batch_size`` items per batch (fewer: expired items are filtered out
        after the page is read; a page left empty is not yielded).

        It reads every item of the table: 1 read unit per 4 KB scanned,
        expired items included, whatever the filter. Each page is one
        request and holds nothing; between pages the store serves requests
        as usual. DynamoDB's cursor (``LastEvaluatedKey``) returns each key
        once."""
        start: Item | None = None
        while True:
            now = time.time()
            params: dict[str, Any] = {
                "TableName": self._table,
                "ConsistentRead": True,
                "Limit": batch_size,
                "FilterExpression": SCAN_FILTER,
                "ProjectionExpression": RECORD_PROJECTION,
                "ExpressionAttributeNames": _names(SCAN_FILTER, RECORD_PROJECTION),
                "ExpressionAttributeValues": {":now": _number(now)},
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            page = self._call("scan", "scan", params)
            batch = [
                record
                for item in page.get("Items", ())
                if (record := _record(item, now)) is not None
            ]
            if batch:
                yield batch
            start = page.get("LastEvaluatedKey")
            if start is None:
                return

    def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """Delete every expired item now; returns how many this call deleted.

        A ``Scan`` of the whole table, page by page, and a conditional delete
        of each expired item found; ``progress`` hears what each page's
        deletes removed. The table's TTL deletes expired items anyway, at no
        cost: this is for operations that cannot wait."""
        purged, start = 0, None
        while True:
            params: dict[str, Any] = {
                "TableName": self._table,
                "FilterExpression": EXPIRED,
                "ProjectionExpression": PURGE_PROJECTION,
                "Limit": _PURGE_PAGE,
                "ExpressionAttributeNames": _names(EXPIRED, PURGE_PROJECTION),
                "ExpressionAttributeValues": {":now": _number(time.time())},
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            page = self._call("purge", "scan", params)
            removed = 0
            for item in page.get("Items", ()):
                removed += self._purge_one(item["key"]["S"])
            purged += removed
            if progress is not None and removed:
                progress(removed)
            start = page.get("LastEvaluatedKey")
            if start is None:
                return purged

    def wait(self, key: str, timeout: float, attempt: int) -> None:
        delay = backoff_delay(attempt, base=_POLL_BASE, cap=_POLL_CAP)
        self._waiters.wait(key, min(timeout, delay))

    # -- requests -----------------------------------------------------------------

    def _purge_one(self, key: str) -> int:
        try:
            self._delete("purge", key, PURGE_CONDITION, {})
        except _Refused:
            return 0  # revived, or purged by another process first
        return 1

    def _delete(self, op: str, key: str, condition: str, values: dict[str, Any]) -> None:
        self._call(
            op,
            "delete_item",
            {
                "TableName": self._table,
                "Key": {"key": {"S": key}},
                "ConditionExpression": condition,
                "ExpressionAttributeNames": _names(condition),
                "ExpressionAttributeValues": {":now": _number(time.time()), **values},
            },
        )

    def _slide_due(self, lease: Lease, ttl: float, refresh_after: float) -> bool:
        """Whether a release slides the idle deadline: when that moves it by
        ``refresh_after`` or more (a lease the store does not remember: yes)."""
        known = self._held.deadlines(lease)
        expires = None if known is None else known[0]
        if known is None or expires is None:
            return True
        return _capped_deadline(time.time() + ttl, known[1]) - expires >= refresh_after

    def _capped(
        self, op: str, lease: Lease, condition: str, update: str, ttl: float, values: dict[str, Any]
    ) -> None:
        """A fenced write that sets the idle deadline ``ttl`` from now, capped
        by the hard deadline: the one remembered from the acquire, else the
        one a refusal answers (then a second request)."""
        now = time.time()
        known = self._held.deadlines(lease)
        target = _capped_deadline(now + ttl, None if known is None else known[1])
        try:
            self._update(
                op,
                lease.key,
                condition,
                update,
                {
                    **values,
                    ":now": _number(now),
                    ":token": _number(lease.token),
                    **_deadline(target),
                },
            )
        except _Refused as refused:
            old = refused.item
            absolute = None if old is None else _float(old, "absolute_expires_at")
            fenced = (
                old is not None
                and int(old["token"]["N"]) == lease.token
                and (_float(old, "expires_at") or 0.0) > now
            )
            if not fenced or absolute is None or absolute >= target:
                raise lease_lost(lease) from None
            if absolute <= now:
                raise lease_lost(lease) from None  # its hard deadline passed: gone
            self._fenced(op, lease, condition, update, {**values, **_deadline(absolute)})

    def _fenced(
        self, op: str, lease: Lease, condition: str, update: str, values: dict[str, Any]
    ) -> None:
        try:
            self._update(
                op,
                lease.key,
                condition,
                update,
                {":now": _number(time.time()), ":token": _number(lease.token), **values},
            )
        except _Refused:
            raise lease_lost(lease) from None

    def _released(self, lease: Lease) -> None:
        self._held.forget(lease)
        self._waiters.wake(lease.key)

    def _update(
        self,
        op: str,
        key: str,
        condition: str,
        update: str,
        values: dict[str, Any],
        *,
        returns: str = "NONE",
    ) -> Any:
        return self._call(
            op,
            "update_item",
            {
                "TableName": self._table,
                "Key": {"key": {"S": key}},
                "ConditionExpression": condition,
                "UpdateExpression": update,
                "ExpressionAttributeNames": _names(condition, update),
                "ExpressionAttributeValues": values,
                "ReturnValues": returns,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            },
        )

    def _call(self, op: str, method: str, params: dict[str, Any]) -> Any:
        """One request, retried while throttled (within the bound); a failed
        condition raises :class:`_Refused`, every other driver error the
        translated one."""
        client = self._client.get()
        deadline = time.monotonic() + time_budget(self._timeout)
        for attempt in range(1_000):
            try:
                return getattr(client, method)(**params)
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    raise _Refused(exc.response.get("Item")) from None
                delay = backoff_delay(attempt, base=_THROTTLE_BASE, cap=_THROTTLE_CAP)
                if _code(exc) not in _THROTTLED or time.monotonic() + delay >= deadline:
                    raise ERRORS.translate(op, self._where, exc) from exc
            except (BotoCoreError, OSError) as exc:
                raise ERRORS.translate(op, self._where, exc) from exc
            sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connected(self) -> Any:
        try:
            return open_client(self._options, self._config)
        except (BotoCoreError, OSError) as exc:
            raise ERRORS.translate("connect", self._where, exc) from exc


def _capped_deadline(expires: float, absolute: float | None) -> float:
    return expires if absolute is None else min(expires, absolute)


def _refusal(item: Item | None, now: float) -> Locked | None:
    """What a refused acquire means, from the item as it was: absent or
    expired (``None``), or held until ``locked_until``."""
    if item is None or (_float(item, "expires_at") or 0.0) <= now:
        return None
    until = _float(item, "locked_until")
    # unlocked, yet refused: it was released between the condition and this
    # look (it cannot be), or a clock went back; re-check at once
    return Locked(max((until or now) - now, 0.001))


def _record(item: Item, now: float) -> Record | None:
    """The item as a :class:`Record`, or ``None`` if it expired by ``now``."""
    expires = _float(item, "expires_at")
    if expires is None or expires <= now:
        return None
    return Record(
        item["key"]["S"],
        bytes(item["data"]["B"]),
        expires,
        _float(item, "locked_until"),
        float(item["created_at"]["N"]),
        _float(item, "locked_at"),
    )
