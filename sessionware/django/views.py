"""Per view, the lock mode of its request's session: a decorator for
function views, a mixin for class-based views.

The middleware finds the view a request is routed to before anything else
runs, and a view's own mode wins over ``SESSIONWARE["LOCK_MODE"]``:
``"exclusive"`` locks the session, ``"read"`` takes the last committed
snapshot (no lock, no wait; changes raise), ``"none"`` gives the view no
session at all (it reads as empty; changes raise). As Django's
``csrf_exempt`` does, the decorator marks the view and the middleware acts
on the mark.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

from sessionware.exceptions import ConfigurationError
from sessionware.modes import LockMode

__all__ = ["UsesSessionMixin", "uses_session"]

View = TypeVar("View", bound=Callable[..., Any])

MARK = "sessionware_mode"
"""The attribute of a view function that holds its mode."""

_VIEW_MODES = (LockMode.EXCLUSIVE, LockMode.READ, LockMode.NONE)


def checked_mode(mode: LockMode | str, source: str) -> LockMode:
    """``mode`` as a view's mode, or a :class:`~sessionware.ConfigurationError`
    when the view is declared (at import), not at its first request."""
    if mode in _VIEW_MODES:
        return LockMode(mode)
    raise ConfigurationError(
        f"{source} is {mode!r}: a view's session is 'exclusive', 'read' or 'none'")


def uses_session(mode: LockMode | str = LockMode.EXCLUSIVE) -> Callable[[View], View]:
    """Decorate a view (``def`` or ``async def``) so that its request's session
    is loaded in ``mode``, whatever ``SESSIONWARE["LOCK_MODE"]`` says. On a
    class-based view, ``@method_decorator(uses_session("read"), name="dispatch")``
    or :class:`UsesSessionMixin`."""
    chosen = checked_mode(mode, "uses_session's mode")

    def decorate(view: View) -> View:
        if inspect.iscoroutinefunction(view):
            async def marked_async(*args: Any, **kwargs: Any) -> Any:
                return await view(*args, **kwargs)
            marked: Callable[..., Any] = marked_async
        else:
            def marked_sync(*args: Any, **kwargs: Any) -> Any:
                return view(*args, **kwargs)
            marked = marked_sync
        marked = functools.wraps(view)(marked)
        setattr(marked, MARK, chosen)
        return cast(View, marked)

    return decorate


class UsesSessionMixin:
    """A class-based view whose request's session is loaded in
    :attr:`session_mode` (put it before ``View`` in the bases)::

        class CartView(UsesSessionMixin, TemplateView):
            session_mode = "read"
    """

    session_mode: ClassVar[LockMode | str] = LockMode.EXCLUSIVE
    """``"exclusive"`` (default), ``"read"`` or ``"none"``; ``as_view(session_mode=...)``
    sets it for one route."""

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., Any]:
        """Django's ``as_view``, with the view function marked with the mode."""
        mode = checked_mode(initkwargs.get("session_mode", cls.session_mode),
                            f"{cls.__name__}.session_mode")
        view: Callable[..., Any] = super().as_view(**initkwargs)  # type: ignore[misc]
        setattr(view, MARK, mode)
        return view


def view_mode(view: Callable[..., Any]) -> LockMode | None:
    """The mode ``view`` was declared with, or ``None``."""
    mode = getattr(view, MARK, None)
    return mode if isinstance(mode, LockMode) else None
