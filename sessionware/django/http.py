"""Between the core's answers and Django's request and response objects."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import patch_vary_headers

from sessionware.django.engine import SessionStore
from sessionware.responses import ErrorResponse

__all__ = ["error_response", "scope_of", "set_cookies"]


def scope_of(request: HttpRequest) -> dict[str, Any]:
    """The ASGI-scope-like view of ``request`` that ``LOCK_MODE`` rules and
    callables read, under WSGI and ASGI alike: ``type``, ``method``, ``path``
    (``request.path_info``, as URL patterns see it), ``root_path``,
    ``scheme``, ``query_string`` (bytes), ``headers`` (lower-case byte
    pairs) and ``request`` (Django's)."""
    return {
        "type": "http",
        "method": request.method,
        "path": request.path_info,
        "root_path": request.META.get("SCRIPT_NAME", ""),
        "scheme": request.scheme,
        "query_string": request.META.get("QUERY_STRING", "").encode("latin-1"),
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in request.headers.items()],
        "request": request,
    }


def set_cookies(response: HttpResponseBase, headers: list[str], store: SessionStore) -> None:
    """Put the commit's ``Set-Cookie`` values in ``response.cookies`` (where
    Django's handlers and test client read them), with the lifetime
    ``set_expiry()`` gave the session; the session's key becomes the new value."""
    for header in headers:
        jar = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            if morsel.value:
                store._set_key(morsel.value)
                _expiry(morsel, store)
            else:
                store._set_key(None)
            response.cookies[name] = morsel


def _expiry(morsel: Any, store: SessionStore) -> None:
    if store.get("_session_expiry") is None:
        return
    if store.get_expire_at_browser_close():
        morsel["max-age"] = ""
    else:
        morsel["max-age"] = store.get_expiry_age()


def vary_on_cookie(response: HttpResponseBase, store: SessionStore, cookies: list[str]) -> None:
    """As Django's middleware: a response that read the session, or set its
    cookie, differs by the cookie."""
    if store.accessed or cookies:
        patch_vary_headers(response, ("Cookie",))


def error_response(answer: ErrorResponse) -> HttpResponse:
    """The middleware's ``on_error`` answer as a Django response."""
    response = HttpResponse(answer.body, status=answer.status)
    for name, value in answer.all_headers():
        response[name] = value
    return response
