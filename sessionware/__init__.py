"""sessionware: locked server-side sessions for ASGI and WSGI apps."""

from __future__ import annotations

from sessionware.exceptions import (
    ConfigurationError,
    LeaseLost,
    LockError,
    LockTimeout,
    QueueFull,
    SerializationError,
    SessionClosed,
    SessionTooLarge,
    SessionwareError,
    StoreError,
    StoreUnavailable,
)

__version__ = "0.1.0"

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
    "__version__",
]
