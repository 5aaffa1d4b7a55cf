"""DynamoDBStore: sessions in Amazon DynamoDB, one item per session (``pip install
sessionware[dynamodb]``). Design, costs, clock skew, failures: docs/stores/dynamodb.md.

One table, partition key ``key`` (S), TTL on ``ttl``; times in epoch seconds by the client's
clock. Attributes: ``data`` B, ``token`` N (random at create, +1 at every acquire),
``locked_until`` and ``locked_at`` N (absent: unlocked), ``created_at`` N, ``expires_at`` N
(capped by ``absolute_expires_at`` N), ``ttl`` N (``expires_at`` rounded up). Each operation
is one request on the live item (:data:`LIVE`), fenced ones on the token too; ``scan`` and
``purge_expired`` a ``Scan`` per page. Waiters poll. Permissions: ``dynamodb:GetItem``,
``PutItem``, ``UpdateItem``, ``DeleteItem``, ``DescribeTable``; ``CreateTable``,
``DescribeTimeToLive``, ``UpdateTimeToLive`` for ``setup()`` with ``create_table=True``;
``Scan`` for ``purge_expired()`` and ``scan()``.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

from sessionware._async.io.primitives import sleep
from sessionware._async.stores.base import SCAN_BATCH, PerProcess, Store, check_limits, retried
from sessionware._async.waiters import Waiters
from sessionware.exceptions import ConfigurationError, SessionTooLarge, StoreError
from sessionware.stores._errors import SETUP_HINT, ErrorTable, Meaning, Row, lease_lost, needs_extra
from sessionware.stores.answers import Lease, Locked, Record, backoff_delay

if TYPE_CHECKING:
    from sessionware.urls import StoreURL

with needs_extra("DynamoDBStore", "aiobotocore and botocore", "dynamodb"):
    from botocore import exceptions as boto  # type: ignore[import-untyped]

    from sessionware._async.io.dynamodb_client import close_client, home, open_client

__all__ = ["DynamoDBStore"]

DEFAULT_TABLE = "sessionware_sessions"
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")  # DynamoDB's rule for table names
# DynamoDB's item limit, 400 KB, less 1 KB for the other attributes (under 300 bytes)
MAX_DATA = 400 * 1024 - 1024
_POLL_BASE = 0.05  # first re-check of a waiter after 25-50 ms ...
_POLL_CAP = 0.5  # ... doubling up to 250-500 ms
_THROTTLE_BASE = 0.025  # backoff of a throttled request: 12-25 ms, doubling ...
_THROTTLE_CAP = 1.0  # ... up to 0.5-1 s, within the operation's bound
_ACTIVE_POLL = 0.5  # seconds between looks at a table being created
_PURGE_PAGE = 500  # items per Scan page of purge_expired
_REMEMBERED = 10_000  # most leases whose deadlines the store remembers (see _capped)

# botocore's low-level API on both faces: values typed {"S": ...}, {"N": "..."}, {"B": ...}
Item = Mapping[str, Mapping[str, Any]]

# -- expressions ---------------------------------------------------------------
# #names stand for attributes (some are reserved words); :now is the client's clock.

NAMES = {"#key": "key", "#data": "data", "#token": "token", "#locked": "locked_until",
         "#locked_at": "locked_at", "#created": "created_at",
         "#expires": "expires_at", "#absolute": "absolute_expires_at", "#ttl": "ttl"}

# A live item: its (capped) idle deadline is ahead. discard() deletes on it alone.
LIVE = "attribute_exists(#key) AND #expires > :now"

# acquire(): :now, :until, :one. Takes the lease of a live item whose lease is
# absent or lapsed (token + 1, locked_at the grant's moment); never creates an
# item. A refusal answers the item as it was (ALL_OLD): none, expired, or held.
ACQUIRE_CONDITION = f"{LIVE} AND (attribute_not_exists(#locked) OR #locked <= :now)"
ACQUIRE_UPDATE = "SET #token = #token + :one, #locked = :until, #locked_at = :now"

# commit(), and release() with a due slide: :now, :token, :expires, :ttl (:data) on the
# live item carrying :token (FENCED: delete(), release() without a slide) if :expires does
# not pass its hard deadline (see _capped). Every unlock removes locked_at with locked_until.
FENCED = f"{LIVE} AND #token = :token"
CAPPED = "(attribute_not_exists(#absolute) OR #absolute >= :expires)"
COMMIT_CONDITION = f"{FENCED} AND {CAPPED}"
COMMIT_UPDATE = "SET #data = :data, #expires = :expires, #ttl = :ttl REMOVE #locked, #locked_at"
RELEASE_SLIDE_UPDATE = "SET #expires = :expires, #ttl = :ttl REMOVE #locked, #locked_at"
RELEASE_UPDATE = "REMOVE #locked, #locked_at"

# renew(): :now, :token, :until; only while locked (commit and release remove
# locked_until, a lapsed lease keeps it). locked_at stays the grant's.
RENEW_CONDITION = f"{FENCED} AND attribute_exists(#locked)"
RENEW_UPDATE = "SET #locked = :until"

# read()'s slide: :now, :expires, :ttl. Forward only, capped as commit's.
SLIDE_CONDITION = f"{LIVE} AND #expires < :expires AND {CAPPED}"
SLIDE_UPDATE = "SET #expires = :expires, #ttl = :ttl"

# create(): :now. Puts an unlocked item unless a live one has the key; an
# expired one is replaced (with a new random token: its leases never match).
CREATE_CONDITION = "attribute_not_exists(#key) OR #expires <= :now"

# purge_expired(): :now. A Scan filtered on EXPIRED, then each item deleted if still expired.
EXPIRED = "#expires <= :now"
PURGE_CONDITION = f"attribute_exists(#key) AND {EXPIRED}"
PURGE_PROJECTION = "#key, #expires"

# inspect() and scan(): a Record's attributes (an absent one left out). A projection trims
# the answer, not the read units; scan()'s filter applies after a page of Limit items is read.
RECORD_PROJECTION = "#key, #data, #expires, #locked, #locked_at, #created"
SCAN_FILTER = "#expires > :now"

# setup(): the table and its TTL, when missing.
TABLE = {"BillingMode": "PAY_PER_REQUEST",
         "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
         "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}]}
TTL = {"Enabled": True, "AttributeName": "ttl"}

_THROTTLED = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException",
                        "RequestLimitExceeded", "LimitExceededException",
                        "TransactionConflictException"})
_SERVER_FAULTS = frozenset({"InternalServerError", "ServiceUnavailable"})
# found before anything is sent: no retry or wait helps
_MISCONFIGURED = (boto.NoCredentialsError, boto.PartialCredentialsError, boto.NoRegionError,
                  boto.ParamValidationError)


def _code(exc: BaseException) -> str:
    # botocore's errors may carry response=None (a read timeout, say)
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


def _throttled(exc: BaseException) -> bool:
    return _code(exc) in _THROTTLED


def _server_fault(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return _code(exc) in _SERVER_FAULTS or status >= 500


class _Refused(Exception):
    """A condition failed; ``item`` is the item as it was (``ALL_OLD``), if any."""

    @property
    def item(self) -> Item | None:
        return (getattr(self.__cause__, "response", None) or {}).get("Item")


# A failed condition is the store's to read; a throttled request was refused before it ran;
# a server fault or a connection lost mid-request may have been applied; one never sent not.
ERRORS = ErrorTable("DynamoDB", [
    Row(boto.ClientError, _Refused,
        when=lambda exc: _code(exc) == "ConditionalCheckFailedException"),
    Row(boto.ClientError, Meaning.NOT_APPLIED, when=_throttled),
    Row(boto.ClientError, Meaning.MAYBE_APPLIED, when=_server_fault),
    Row(boto.ClientError, Meaning.ERROR, hint=SETUP_HINT,
        when=lambda exc: _code(exc) == "ResourceNotFoundException"),
    Row((boto.ClientError, *_MISCONFIGURED), Meaning.ERROR),
    Row((boto.EndpointConnectionError, boto.ConnectTimeoutError), Meaning.NOT_APPLIED),
    Row((boto.BotoCoreError, OSError), Meaning.MAYBE_APPLIED),
])


def _key(key: str) -> dict[str, Any]:
    return {"key": {"S": key}}


def _number(value: float | int) -> dict[str, str]:
    return {"N": str(value) if isinstance(value, int) else f"{value:.6f}"}


def _deadline(expires: float) -> dict[str, Any]:
    """The values of a new idle deadline: itself and its TTL attribute."""
    return {":expires": _number(expires), ":ttl": _number(math.ceil(expires))}


def _float(item: Item, name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value["N"])


class DynamoDBStore(Store):
    """Sessions in a DynamoDB table.

    :param table: the table name.
    :param endpoint_url: where DynamoDB is (default: the region's endpoint).
    :param region_name: the AWS region (default: the standard chain's).
    :param aws_access_key_id, aws_secret_access_key, aws_session_token: credentials.
    :param create_table: :meth:`setup` creates the table if missing, else checks it.
    :param timeout: seconds before a connection or an answer is given up.
    :param max_connections: the most HTTP connections per process.
    """

    def __init__(self, table: str = DEFAULT_TABLE, *, endpoint_url: str | None = None,
                 region_name: str | None = None, aws_access_key_id: str | None = None,
                 aws_secret_access_key: str | None = None, aws_session_token: str | None = None,
                 create_table: bool = True, timeout: float = 5.0,
                 max_connections: int = 50) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(f"table name {table!r}: 3 to 255 letters, digits, _, . and -")
        check_limits(timeout, max_connections)
        self._table, self._create_table, self._timeout = table, create_table, timeout
        self._where = f"{endpoint_url or region_name or 'the default region'}/{table}"
        given = {"endpoint_url": endpoint_url, "region_name": region_name,
                 "aws_access_key_id": aws_access_key_id, "aws_session_token": aws_session_token,
                 "aws_secret_access_key": aws_secret_access_key}
        self._options = {key: value for key, value in given.items() if value is not None}
        # botocore's retries are off (the store's are within its bound), and its parameter
        # validation, a sixth of its CPU per request (the tests send each request's shape)
        self._config = {"connect_timeout": timeout, "read_timeout": timeout,
                        "retries": {"total_max_attempts": 1, "mode": "standard"},
                        "max_pool_connections": max_connections, "parameter_validation": False}
        self._client: PerProcess[Any] = PerProcess(self, self._connected, close_client, place=home)
        # (idle, hard) deadline of the leases of this store, by (key, token): see _capped
        self._held: OrderedDict[tuple[str, int], tuple[float | None, float | None]] = OrderedDict()
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

    async def setup(self) -> None:
        """Create the table (:data:`TABLE`, :data:`TTL`) if missing and wait until it is ACTIVE
        (``create_table=False``: check it exists); safe from several processes at once."""
        while (status := await self._table_status()) != "ACTIVE":
            if status is not None:
                await sleep(_ACTIVE_POLL)
            elif self._create_table:  # in use: another process creates it at the same moment
                await self._setup("create_table", "ResourceInUseException", **TABLE)
            else:
                raise StoreError(f"DynamoDB at {self._where}: no table {self._table!r} "
                                 "(create it as the store's docs say, or create_table=True)")
        if self._create_table:
            answer = await self._call("setup", "describe_time_to_live")
            if answer["TimeToLiveDescription"]["TimeToLiveStatus"] not in ("ENABLED", "ENABLING"):
                # already enabled: by another process at the same moment
                await self._setup("update_time_to_live", "already enabled",
                                  TimeToLiveSpecification=TTL)

    async def aclose(self) -> None:
        """Close this process's client; wake every local waiter."""
        await self._client.aclose()
        self._waiters.wake_all()

    async def _table_status(self) -> str | None:
        answer = await self._setup("describe_table", "ResourceNotFoundException")
        return None if answer is None else str(answer["Table"]["TableStatus"])

    async def _setup(self, method: str, tolerated: str, **params: Any) -> Any:
        """A request of setup(); ``None`` if it fails with ``tolerated`` (code or words)."""
        try:
            return await self._call("setup", method, **params)
        except StoreError as exc:
            if _code(exc.__cause__ or exc) != tolerated and tolerated not in str(exc).lower():
                raise
        return None

    # -- operations -----------------------------------------------------------

    async def acquire(self, key: str, *, lease_ttl: float) -> Lease | Locked | None:
        now = time.time()
        try:
            answer = await self._update("acquire", key, ACQUIRE_CONDITION, ACQUIRE_UPDATE, {
                ":now": _number(now), ":until": _number(now + lease_ttl),
                ":one": _number(1)}, returns="ALL_NEW")
        except _Refused as refused:  # the item as it was: absent or expired, or held
            old = refused.item
            if old is None or (_float(old, "expires_at") or 0.0) <= now:
                return None
            # unlocked, yet refused: released meanwhile, or a clock went back: re-check at once
            return Locked(max((_float(old, "locked_until") or now) - now, 0.001))
        item = answer["Attributes"]
        lease = Lease(key, int(item["token"]["N"]), bytes(item["data"]["B"]))
        if len(self._held) >= _REMEMBERED:
            self._held.popitem(last=False)  # the oldest
        self._held[key, lease.token] = (
            _float(item, "expires_at"), _float(item, "absolute_expires_at"))
        return lease

    async def commit(self, lease: Lease, data: bytes, *, ttl: float) -> None:
        if len(data) > MAX_DATA:
            raise SessionTooLarge(len(data), MAX_DATA)
        await self._capped("commit", lease, COMMIT_UPDATE, ttl, {":data": {"B": data}})
        self._released(lease)

    async def release(self, lease: Lease, *, ttl: float | None = None,
                      refresh_after: float = 0.0) -> None:
        if ttl is not None and self._slide_due(lease, ttl, refresh_after):
            await self._capped("release", lease, RELEASE_SLIDE_UPDATE, ttl, {})
        else:
            await self._fenced("release", lease, FENCED, RELEASE_UPDATE, {})
        self._released(lease)

    async def renew(self, lease: Lease, *, lease_ttl: float) -> None:
        await self._fenced("renew", lease, RENEW_CONDITION, RENEW_UPDATE,
                           {":until": _number(time.time() + lease_ttl)})

    async def read(self, key: str, *, ttl: float | None = None,
                   refresh_after: float = 0.0) -> bytes | None:
        answer = await self._call("read", "get_item", Key=_key(key), ConsistentRead=True)
        item = answer.get("Item")
        now = time.time()
        expires = None if item is None else _float(item, "expires_at")
        if item is None or expires is None or expires <= now:
            return None
        if ttl is not None:
            target = min(now + ttl, _float(item, "absolute_expires_at") or math.inf)
            if target - expires >= refresh_after and target > expires:
                with contextlib.suppress(_Refused):  # slid by another request meanwhile, or gone
                    await self._update("read", key, SLIDE_CONDITION, SLIDE_UPDATE,
                                       {":now": _number(now), **_deadline(target)})
        return bytes(item["data"]["B"])

    async def create(self, key: str, data: bytes, *, ttl: float,
                     absolute_ttl: float | None = None) -> bool:
        if len(data) > MAX_DATA:
            raise SessionTooLarge(len(data), MAX_DATA)
        now = time.time()
        absolute = None if absolute_ttl is None else now + absolute_ttl
        expires = min(now + ttl, absolute or math.inf)
        item: dict[str, Any] = {
            **_key(key), "data": {"B": data}, "token": _number(secrets.randbits(62)),
            "expires_at": _number(expires), "ttl": _number(math.ceil(expires)),
            "created_at": _number(now)}
        if absolute is not None:
            item["absolute_expires_at"] = _number(absolute)
        try:
            await self._call("create", "put_item", Item=item,
                             ConditionExpression=CREATE_CONDITION,
                             ExpressionAttributeValues={":now": _number(now)})
        except _Refused:
            return False
        return True

    async def delete(self, lease: Lease) -> None:
        if not await self._delete("delete", lease.key, FENCED, {":token": _number(lease.token)}):
            raise lease_lost(lease)
        self._released(lease)

    async def discard(self, key: str) -> bool:
        """One ``DeleteItem`` conditioned on a live item (:data:`LIVE`)."""
        try:
            return await self._delete("discard", key, LIVE, {})  # False: absent, or expired
        finally:  # woken whatever the answer: they re-check and find the session gone
            self._waiters.wake(key)

    async def inspect(self, key: str) -> Record | None:
        """One strongly consistent ``GetItem``; an expired item is absent."""
        answer = await self._call("inspect", "get_item", Key=_key(key), ConsistentRead=True,
                                  ProjectionExpression=RECORD_PROJECTION)
        return None if "Item" not in answer else _record(answer["Item"], time.time())

    async def scan(self, *, batch_size: int = SCAN_BATCH) -> AsyncIterator[list[Record]]:
        """A consistent ``Scan`` of the whole table, a page of ``batch_size`` items a batch."""
        async for now, items in self._pages("scan", FilterExpression=SCAN_FILTER,
                                            ProjectionExpression=RECORD_PROJECTION,
                                            ConsistentRead=True, Limit=batch_size):
            batch = [record for item in items if (record := _record(item, now)) is not None]
            if batch:
                yield batch

    async def purge_expired(self, *, progress: Callable[[int], object] | None = None) -> int:
        """A ``Scan`` of the whole table and a conditional delete of each expired
        item (the table's TTL deletes them anyway, at no cost, but lazily)."""
        purged = 0
        async for _, items in self._pages("purge", FilterExpression=EXPIRED,
                                          ProjectionExpression=PURGE_PROJECTION,
                                          Limit=_PURGE_PAGE):
            # refused: revived, or purged by another process first
            removed = sum([await self._delete("purge", item["key"]["S"], PURGE_CONDITION, {})
                           for item in items])
            purged += removed
            if progress is not None and removed:
                progress(removed)
        return purged

    async def wait(self, key: str, timeout: float, attempt: int) -> None:
        delay = backoff_delay(attempt, base=_POLL_BASE, cap=_POLL_CAP)
        await self._waiters.wait(key, min(timeout, delay))

    # -- requests -----------------------------------------------------------------

    async def _pages(self, op: str, **params: Any) -> AsyncIterator[tuple[float, list[Item]]]:
        """The pages of a ``Scan``, each one's ``:now`` and items (each key once)."""
        while True:
            now = time.time()
            page = await self._call(op, "scan", **params,
                                    ExpressionAttributeValues={":now": _number(now)})
            yield now, page.get("Items", [])
            params["ExclusiveStartKey"] = page.get("LastEvaluatedKey")
            if params["ExclusiveStartKey"] is None:
                return

    async def _delete(self, op: str, key: str, condition: str, values: dict[str, Any]) -> bool:
        """Whether a ``DeleteItem`` on ``condition`` deleted the item."""
        try:
            await self._call(op, "delete_item", Key=_key(key), ConditionExpression=condition,
                             ExpressionAttributeValues={":now": _number(time.time()), **values})
        except _Refused:
            return False
        return True

    def _slide_due(self, lease: Lease, ttl: float, refresh_after: float) -> bool:
        """Whether a release slides: by ``refresh_after`` or more (a lease not remembered: yes)."""
        expires, absolute = self._held.get((lease.key, lease.token), (None, None))
        target = min(time.time() + ttl, absolute or math.inf)
        return expires is None or target - expires >= refresh_after

    async def _capped(self, op: str, lease: Lease, update: str, ttl: float,
                      values: dict[str, Any]) -> None:
        """A fenced write (:data:`COMMIT_CONDITION`) of the idle deadline ``ttl`` from now,
        capped by the hard deadline (an update expression has no ``min``): the one remembered
        from the acquire, else the one a refusal answers (then a second request)."""
        now = time.time()
        _, absolute = self._held.get((lease.key, lease.token), (None, None))
        target = min(now + ttl, absolute or math.inf)
        try:
            await self._update(op, lease.key, COMMIT_CONDITION, update, {
                **values, ":now": _number(now), ":token": _number(lease.token),
                **_deadline(target)})
        except _Refused as refused:
            old = refused.item
            absolute = None if old is None else _float(old, "absolute_expires_at")
            fenced = (old is not None and int(old["token"]["N"]) == lease.token
                      and (_float(old, "expires_at") or 0.0) > now)
            # not ours, or not for want of a cap; or its hard deadline passed: gone
            if not fenced or absolute is None or absolute >= target or absolute <= now:
                raise lease_lost(lease) from None
            await self._fenced(op, lease, COMMIT_CONDITION, update,
                               {**values, **_deadline(absolute)})

    async def _fenced(self, op: str, lease: Lease, condition: str, update: str,
                      values: dict[str, Any]) -> None:
        try:
            await self._update(op, lease.key, condition, update, {
                ":now": _number(time.time()), ":token": _number(lease.token), **values})
        except _Refused:
            raise lease_lost(lease) from None

    def _released(self, lease: Lease) -> None:
        self._held.pop((lease.key, lease.token), None)
        self._waiters.wake(lease.key)

    async def _update(self, op: str, key: str, condition: str, update: str,
                      values: dict[str, Any], *, returns: str = "NONE") -> Any:
        return await self._call(op, "update_item", Key=_key(key), ConditionExpression=condition,
                                UpdateExpression=update, ExpressionAttributeValues=values,
                                ReturnValues=returns,
                                ReturnValuesOnConditionCheckFailure="ALL_OLD")

    async def _call(self, op: str, method: str, **params: Any) -> Any:
        """One request on the table, with the #names its expressions use (DynamoDB rejects
        others), retried while throttled; driver errors translated (:class:`_Refused`)."""
        used = set(re.findall(r"#\w+", " ".join(
            value for name, value in params.items() if name.endswith("Expression"))))
        if used:
            params["ExpressionAttributeNames"] = {name: NAMES[name] for name in sorted(used)}
        request = getattr(await self._client.get(), method)
        with ERRORS.mapped(op, self._where):
            return await retried(lambda: request(TableName=self._table, **params),
                                 retry=_throttled, timeout=self._timeout,
                                 base=_THROTTLE_BASE, cap=_THROTTLE_CAP)

    async def _connected(self) -> Any:
        with ERRORS.mapped("connect", self._where):
            return await open_client(self._options, self._config)


def _record(item: Item, now: float) -> Record | None:
    """The item as a :class:`Record`, or ``None`` if it expired by ``now``."""
    expires = _float(item, "expires_at")
    if expires is None or expires <= now:
        return None
    return Record(item["key"]["S"], bytes(item["data"]["B"]), expires,
                  _float(item, "locked_until"), float(item["created_at"]["N"]),
                  _float(item, "locked_at"))
