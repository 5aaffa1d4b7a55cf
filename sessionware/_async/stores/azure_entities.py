"""How AzureTableStore lays out a session as a Table entity, and the requests
on it. One entity per session, times in ms since the epoch by the client's
clock::

    PartitionKey, RowKey  the store key (one partition each); "session"
    Token                 Int64, fencing token: grows at every acquire, never reused
    LockedUntil, LockedAt Int64, lease deadline and when acquire took it; 0: unlocked
    CreatedAt, ExpiresAt  Int64, when create() wrote it; idle deadline (never past the next)
    AbsoluteExpiresAt     Int64, hard deadline; 0: none
    Blob, D00 ... D10     the data: inline, or the blob holding it (``azure_blobs``)

This process keeps what it saw last of each entity, so that a write may skip
the read ("Atomicity, fencing and round trips" in docs/stores/azure.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sessionware._async.io import azure_clients as sdk
from sessionware._async.io.primitives import ThreadLock, sleep
from sessionware._async.stores.azure_blobs import (
    MAX_INLINE,
    Blobs,
    Call,
    Missing,
    inline,
    joined,
    named,
)
from sessionware.exceptions import StoreError, StoreUnavailable
from sessionware.stores.answers import Record

__all__ = ["ROW", "Conflict", "Entities", "EntityRecord", "Exists", "Overtaken", "fresh_token",
           "ms", "now_ms"]

logger = logging.getLogger(__name__)

ROW = "session"
# the entity's Int64 properties, by the record's fields
_INT64 = {"token": "Token", "locked_until": "LockedUntil", "locked_at": "LockedAt",
          "expires_at": "ExpiresAt", "absolute": "AbsoluteExpiresAt", "created_at": "CreatedAt"}
_CONFIRM_TICK = 0.001  # seconds: the ETag's resolution on Azurite
_KNOWN_LIMIT = 1024  # entities whose last seen state a store keeps
_KNOWN_BYTES = 32 * 1024 * 1024  # of their data, at most


class Conflict(Exception):
    """412: the entity is not as seen (or 404: it is gone); read it again."""


class Overtaken(Conflict):
    """412 on a confirming write: applied, then written over (see ``Entities.write``)."""


class Exists(Exception):
    """409: an entity (a table, a container) with that name exists."""


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fresh_token() -> int:
    """The clock (µs) and 8 random bits: above any token issued before for
    any key, so a session deleted and created again never meets an old one."""
    return (time.time_ns() // 1000) << 8 | secrets.randbits(8)


def _int(entity: Any, name: str) -> int:
    value = entity.get(name, 0)  # an Int64 comes as an EntityProperty
    return int(getattr(value, "value", value))


@dataclasses.dataclass(frozen=True, slots=True)
class EntityRecord:
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

    @classmethod
    def of(cls, entity: Any) -> EntityRecord:
        """What an entity the SDK answered holds."""
        blob = named(entity)
        return cls(etag=entity.metadata["etag"], blob=blob, data=None if blob else joined(entity),
                   seen=time.monotonic(), **{f: _int(entity, name) for f, name in _INT64.items()})

    def properties(self, key: str, *fields: str) -> dict[str, Any]:
        """Its ``fields`` as the entity's properties (a merge); with none, all (a replace)."""
        entity = {"PartitionKey": key, "RowKey": ROW, **{
            _INT64[field]: sdk.EntityProperty(getattr(self, field), sdk.EdmType.INT64)
            for field in fields or _INT64}}
        if not fields:
            entity.update(Blob=self.blob, **({} if self.blob else inline(self.data or b"")))
        return entity

    def live(self, now: int) -> bool:
        return self.expires_at > now

    def shown(self, key: str) -> Record:
        """What an operator sees of it (its data loaded)."""
        assert self.data is not None
        locked = bool(self.locked_until)
        return Record(key, self.data, self.expires_at / 1000,
                      self.locked_until / 1000 if locked else None,
                      self.created_at / 1000, self.locked_at / 1000 if locked else None)

    def target(self, now: int, ttl: float) -> int:
        """The idle deadline ``ttl`` from ``now``, capped by the hard one."""
        deadline = now + ms(ttl)
        return min(deadline, self.absolute) if self.absolute else deadline

    def taken(self, now: int, lease_ttl: float) -> EntityRecord:
        """Locked at ``now`` by a new lease (a takeover of a lapsed one dates it anew)."""
        return dataclasses.replace(self, token=max(self.token + 1, fresh_token()),
                                   locked_until=now + ms(lease_ttl), locked_at=now)

    def slid(self, now: int, ttl: float | None, refresh_after: float) -> int | None:
        """The idle deadline a touch at ``now`` sets, if that slides it ``refresh_after``."""
        if ttl is None or self.target(now, ttl) - self.expires_at < ms(refresh_after):
            return None
        return self.target(now, ttl)


class Entities:
    """One store's session entities, and what this process saw of them.
    ``client`` gives this process's table client, ``call`` makes a request,
    ``io`` gives its transport timeouts (as for ``Blobs``); ``deadline`` and
    ``check`` bound the re-reads of an entity that keeps changing; ``where``
    names the account in messages."""

    def __init__(self, *, client: Callable[[], Awaitable[sdk.TableClient]], call: Call,
                 io: Callable[[], dict[str, Any]], deadline: Callable[[], float],
                 check: Callable[[float, str], None], blobs: Blobs, where: str,
                 timeout: float, reuse_etags: float) -> None:
        self._client, self._call, self._io = client, call, io
        self._deadline, self._check, self._blobs = deadline, check, blobs
        self._where, self._timeout, self._reuse_etags = where, timeout, reuse_etags
        self._lock = ThreadLock()
        self._known: dict[str, EntityRecord] = {}
        self._known_bytes = 0

    # -- requests -----------------------------------------------------------------

    async def get(self, op: str, key: str) -> EntityRecord | None:
        """The entity, live or expired; ``None`` when there is none."""
        table = await self._client()
        try:
            return EntityRecord.of(
                await self._call(op, lambda: table.get_entity(key, ROW, **self._io())))
        except Missing:
            return None

    async def write(self, op: str, key: str, new: EntityRecord, etag: str,
                    *fields: str) -> EntityRecord:
        """Write ``new`` over the entity if its ETag is still ``etag``: its
        ``fields`` merged, or with none the whole entity replaced; ``new``
        with the new ETag. An answer with the same ETag (Azurite, two writes
        in one tick of its clock) is confirmed by writing again a tick later,
        conditioned on it, until the ETag moves; a 412 then raises
        ``Overtaken``: applied, and written over by a writer that held the
        same ETag (see "Azurite's gaps" in docs/stores/azure.md)."""
        table = await self._client()
        mode = sdk.UpdateMode.MERGE if fields else sdk.UpdateMode.REPLACE
        entity, condition, confirming = new.properties(key, *fields), etag, False
        deadline = self._deadline()
        while True:
            try:
                answer = await self._call(op, functools.partial(
                    table.update_entity, entity, mode=mode, etag=condition,
                    match_condition=sdk.MatchConditions.IfNotModified, **self._io()))
            except (Conflict, Missing):  # applied, then written over; or changed meanwhile
                raise (Overtaken if confirming else Conflict)() from None
            if str(answer["etag"]) != condition:
                return dataclasses.replace(new, etag=str(answer["etag"]))
            logger.debug("%s of %s… answered with the ETag it was conditioned on: confirming",
                         op, key[:12])
            if time.monotonic() >= deadline:  # an ETag that never moves proves nothing
                raise StoreUnavailable(
                    f"Azure Storage at {self._where}, during {op}: the entity's ETag did not "
                    f"change for {self._timeout}s of writes", maybe_applied=True)
            await sleep(_CONFIRM_TICK)
            condition, confirming = str(answer["etag"]), True

    async def insert(self, key: str, record: EntityRecord) -> bool:
        """Insert the entity, or replace an expired one; ``False``: a live one is there."""
        table = await self._client()
        deadline = self._deadline()
        while True:
            try:
                # no echo of the entity (up to 1 MiB) in the answer: its ETag is enough
                answer = await self._call("create", lambda: table.create_entity(
                    record.properties(key), response_preference="return-no-content",
                    **self._io()))
            except Exists:
                old = await self.get("create", key)
            else:
                self.remember(key, dataclasses.replace(record, etag=str(answer["etag"])))
                return True
            if old is not None and old.live(now_ms()):
                return False
            with contextlib.suppress(Conflict):
                if old is not None:  # expired: replaced, with a larger token
                    revived = dataclasses.replace(record, token=max(record.token, old.token + 1))
                    self.remember(key, await self.write("create", key, revived, old.etag))
                    await self._blobs.drop(old.blob)
                    return True
            self._check(deadline, "create")  # purged, or changed meanwhile: insert again

    async def delete(self, op: str, key: str, etag: str, row: str = ROW) -> None:
        """Delete the entity if its ETag is still ``etag``."""
        table = await self._client()
        await self._call(op, functools.partial(
            table.delete_entity, key, row, etag=etag,
            match_condition=sdk.MatchConditions.IfNotModified, **self._io()))

    # -- with its data ------------------------------------------------------------

    async def loaded(self, op: str, record: EntityRecord) -> EntityRecord:
        """The record with its data (``Missing``: its blob is gone since)."""
        if record.data is not None:
            return record
        return dataclasses.replace(record, data=await self._blobs.load(op, record.blob))

    async def read_live(self, op: str, key: str) -> tuple[EntityRecord, int] | None:
        """The live entity, data loaded, and the time judged by; else ``None``."""
        deadline, missing = self._deadline(), ""
        while True:
            record, now = await self.get(op, key), now_ms()
            if record is None or not record.live(now):
                self.forget(key)
                return None
            if record.blob and record.blob == missing:
                raise self.lost_blob(missing)
            try:
                return await self.loaded(op, record), now
            except Missing:  # a commit replaced the blob since the entity was read?
                missing = record.blob
                self._check(deadline, op)

    def lost_blob(self, name: str) -> StoreError:
        """An entity names a blob deleted by hand, or by too short an ``orphan_age``."""
        return StoreError(f"Azure Storage at {self._where}: the session's blob {name} is missing")

    # -- what this process saw ----------------------------------------------------

    def last_seen(self, key: str, token: int) -> EntityRecord | None:
        """The entity as last seen, if it carried ``token`` then."""
        record = self._known.get(key)
        return record if record is not None and record.token == token else None

    def reusable(self, key: str) -> EntityRecord | None:
        """The entity as last seen, if acquire may skip the read (seen lately, free)."""
        record, now = self._known.get(key), now_ms()
        if record is None or record.seen + self._reuse_etags < time.monotonic():
            return None
        return record if record.live(now) and record.locked_until <= now else None

    def remember(self, key: str, record: EntityRecord) -> None:
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

    def forget(self, key: str) -> None:
        with self._lock:
            self._drop_known(key)

    def forget_all(self) -> None:  # in a forked child: what was seen was its parent's
        self._known, self._known_bytes = {}, 0

    def _drop_known(self, key: str) -> None:
        dropped = self._known.pop(key, None)
        if dropped is not None:
            self._known_bytes -= len(dropped.data or b"")
