"""Every error sessionware raises, in one tree.

::

    SessionwareError
     +-- ConfigurationError        bad arguments at construction time
     +-- SerializationError        a value the serializer cannot hold
     |    +-- SessionTooLarge      the serialized session exceeds ``max_size``
     +-- SessionClosed             the session was changed after it was committed
     |                             (or changed in read mode, where nothing is saved)
     +-- LockError
     |    +-- LockTimeout          the lock was not granted within ``lock_timeout``
     |    +-- QueueFull            too many requests already wait for this session
     |    +-- LeaseLost            a fenced operation found a newer token: refused
     +-- StoreError
          +-- StoreUnavailable     the store is down, refused or timed out

Stores translate their driver's errors into ``StoreError`` subclasses, so the
middleware and applications never see a driver exception.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "LeaseLost",
    "LockError",
    "LockTimeout",
    "QueueFull",
    "SerializationError",
    "SessionClosed",
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

    Nothing was written, or the write was all-or-nothing and its outcome is
    reported by the store's next read."""
