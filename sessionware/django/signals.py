"""The receivers of Django's signals that sessionware needs: connected when
``sessionware.django`` is imported (by the middleware or the engine), so no
``INSTALLED_APPS`` entry is needed.

* ``user_logged_in``: the session is bound to the user
  (:meth:`~sessionware.Session.bind_user`, the user's primary key as a
  string), so ``SessionAdmin.revoke_user`` and ``sessionware revoke-user``
  log that user out everywhere. ``logout`` flushes the session, which
  unbinds it.
* ``got_request_exception``: a view raised, and Django answers with its
  error page; whatever that page's status, the session saves nothing.
* ``setting_changed`` (``override_settings`` in tests): the settings are
  read again by the next middleware Django loads.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in
from django.core.signals import got_request_exception, setting_changed

from sessionware.django import conf
from sessionware.django.engine import SessionStore

__all__ = ["abandon", "bind_user", "settings_changed"]


def bind_user(sender: Any, request: Any = None, user: Any = None, **extra: Any) -> None:
    session = getattr(request, "session", None)
    if isinstance(session, SessionStore) and user is not None:
        session.bind_user(user._meta.pk.value_to_string(user))


def abandon(sender: Any, request: Any = None, **extra: Any) -> None:
    session = getattr(request, "session", None)
    if isinstance(session, SessionStore) and session._link is not None:
        session._link.abandoned = True


def settings_changed(sender: Any, setting: str = "", **extra: Any) -> None:
    if setting in conf.WATCHED:
        conf.forget()


user_logged_in.connect(bind_user, dispatch_uid="sessionware.django.bind_user")
got_request_exception.connect(abandon, dispatch_uid="sessionware.django.abandon")
setting_changed.connect(settings_changed, dispatch_uid="sessionware.django.settings_changed")
