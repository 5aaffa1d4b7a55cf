"""sessionware: locked server-side sessions for ASGI and WSGI apps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sessionware._async.admin import SessionAdmin
from sessionware.asgi import SessionMiddleware
from sessionware.config import SessionConfig, SessionOptions
from sessionware.cookies import CookieOptions
from sessionware.exceptions import (
    ConfigurationError,
    LeaseLost,
    LockError,
    LockTimeout,
    OutcomeUnknown,
    QueueFull,
    SerializationError,
    SessionClosed,
    SessionNotLoaded,
    SessionTooLarge,
    SessionwareError,
    StoreError,
    StoreUnavailable,
)
from sessionware.loading import commit_session, load_session, uses_session
from sessionware.modes import LockMode, Rule
from sessionware.responses import ErrorResponse, default_error_response
from sessionware.serializers import JSONSerializer, Serializer
from sessionware.session import Session
from sessionware.urls import store_from_env, store_from_url
from sessionware.wsgi import WSGISessionMiddleware

if TYPE_CHECKING:
    from sessionware._sync.admin import SyncSessionAdmin

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "CookieOptions",
    "ErrorResponse",
    "JSONSerializer",
    "LeaseLost",
    "LockError",
    "LockMode",
    "LockTimeout",
    "OutcomeUnknown",
    "QueueFull",
    "Rule",
    "SerializationError",
    "Serializer",
    "Session",
    "SessionAdmin",
    "SessionClosed",
    "SessionConfig",
    "SessionMiddleware",
    "SessionNotLoaded",
    "SessionOptions",
    "SessionTooLarge",
    "SessionwareError",
    "StoreError",
    "StoreUnavailable",
    "SyncSessionAdmin",
    "WSGISessionMiddleware",
    "__version__",
    "commit_session",
    "default_error_response",
    "load_session",
    "store_from_env",
    "store_from_url",
    "uses_session",
]


def __getattr__(name: str) -> Any:
    # The sync face's modules import sessionware.stores, which imports them
    # back: loaded once the package is, on first use.
    if name == "SyncSessionAdmin":
        from sessionware._sync.admin import SyncSessionAdmin

        return SyncSessionAdmin
    raise AttributeError(f"module 'sessionware' has no attribute {name!r}")
