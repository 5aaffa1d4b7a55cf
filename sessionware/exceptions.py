"""Every error sessionware raises, in one tree.

::

    SessionwareError
     +-- ConfigurationError        bad arguments at construction time
     +-- SerializationError        a value the serializer cannot hold
     |    +-- SessionTooLarge      the serialized session exceeds ``max_size``
     +-- SessionClosed             the session was changed after it was committed
     |                             (or changed in read mode, where nothing is saved)
     +-- SessionNotLoaded          no session in this request: not loaded yet (lock
     |                             mode ``lazy``), or none (mode ``none``, no middleware)
     +-- LockError
     |    +-- LockTimeout          the lock was not granted within ``lock_timeout``
     |    +-- QueueFull            too many requests already wait for this session
     |    +-- LeaseLost            a fenced operation found a newer token: refused
     +-- StoreError
          +-- StoreUnavailable     the store is down, refused or timed out
          +-- OutcomeUnknown       a write was sent but never confirmed: it may
                                   or may not have been applied

Stores translate their driver's errors into ``StoreError`` subclasses, so the
middleware and applications never see a driver exception.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "LeaseLost",
    "LockError",
    "LockTimeout",
    "OutcomeUnknown",
    "QueueFull",
    "SerializationError",
    "SessionClosed",
    "SessionNotLoaded",
    "SessionTooLarge",
    "SessionwareError",
    "StoreError",
    "StoreUnavailable",
]


class SessionwareError(Exception):
    """Base class of every error raised by sessionware."""


class ConfigurationError(SessionwareError, ValueError):
    """The middleware or a store was given arguments that cannot work."""


class SerializationError(SessionwareError):
    """The session holds a value the serializer cannot encode, or stored bytes
    cannot be decoded. The stored session is left as it was."""


class SessionTooLarge(SerializationError):
    """The serialized session is larger than the configured ``max_size``.

    :ivar size: the serialized size in bytes.
    :ivar limit: the configured limit in bytes.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"serialized session is {size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


class SessionClosed(SessionwareError, RuntimeError):
    """The session cannot be changed: it was committed early, or it was opened
    in ``read`` mode, where changes would be silently dropped."""


class SessionNotLoaded(SessionwareError, RuntimeError):
    """There is no session in this request to use: lock mode ``lazy`` has not
    loaded it yet (a route loads it with ``load_session`` or declares it with
    ``uses_session``, each driver's own), or the request has none (lock mode
    ``none``, or no sessionware middleware in front of it). Every driver
    raises this one error for it; it is a ``RuntimeError`` too, as the
    errors of Flask's own ``NullSession`` are."""


class LockError(SessionwareError):
    """Base class of the errors about a session's lock."""


class LockTimeout(LockError):
    """The session's lock was not granted within ``lock_timeout`` seconds.

    :ivar retry_after: a hint, in seconds, for when the lock may be free.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(LockTimeout):
    """Too many requests of this process already wait for the same session.

    A subclass of :class:`LockTimeout` because the client's remedy is the same:
    retry later."""


class LeaseLost(LockError):
    """A fenced operation (commit, release, renew, delete) carried a token that is
    no longer the session's current one: another holder took the lock after this
    lease lapsed. The operation was refused and the newer data is untouched."""


class StoreError(SessionwareError):
    """Base class of the errors a store raises."""


class StoreUnavailable(StoreError):
    """The store could not be reached, refused the operation or timed out.

    :ivar maybe_applied: ``False`` when the store knows the operation was not
        applied (refused before it was sent, or rolled back); ``True`` when it
        may have been (it timed out, or the connection broke after it was
        sent). The core settles such a write before answering the request.
    """

    def __init__(self, message: str, *, maybe_applied: bool = True) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class OutcomeUnknown(StoreError):
    """A write (commit, delete, create) was sent, the store did not confirm
    it, and repeating it did not settle whether it was applied. The request is
    answered as a failure that does not invite a retry: retrying could apply
    the change twice."""
