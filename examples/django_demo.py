"""The sessionware demo, in Django: 50 parallel requests add to one cart, none is lost.

Run it (from the repository root)::

    bash scripts/demo.sh django         # then open http://127.0.0.1:8002

or ``python examples/django_demo.py`` in the venv that ``scripts/demo.sh`` made.
A whole Django project in one file: its settings, its views and its URLs. It
serves with Django's threaded development server (``runserver``) on
127.0.0.1:8002 and keeps sessions in ``demo-sessions.db`` (SQLiteStore: no
server, and no database for Django itself). Environment variables: ``PORT``
(default 8002), ``DEMO_DB`` and ``DEMO_SECRET``, as for demo.py. The button
fires 50 fetches at once; each view reads the cart from ``request.session``,
waits a little (as real views do) and writes it back. With Django's own
session engines (``db``, ``cache``, ``signed_cookies``) most of the 50 items
are lost; here all 50 arrive, because each request holds its session's lock
from its first access to the session to the commit.
"""

from __future__ import annotations

import os
import sys
import time

import django
from _page import page  # examples/_page.py: the page every demo serves
from django.conf import settings
from django.core.management import execute_from_command_line
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("DEMO_SECRET", "demo-only-change-me-0123456789abcdef"),
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],  # no models, no database: the sessions live in sessionware's store
    MIDDLEWARE=["sessionware.django.SessionMiddleware"],  # where Django's own was
    SESSION_ENGINE="sessionware.django.engine",
    SESSIONWARE={"STORE_URL": f"sqlite:///{os.environ.get('DEMO_DB', 'demo-sessions.db')}"},
)
django.setup()

from sessionware.django import uses_session  # noqa: E402 - once Django is configured

PAGE = page("Django", "is a Django view on one of runserver's threads",
            reading='@uses_session("read")')


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    # The page that starts the work starts the session: writing to it here sends
    # the cookie with the page, so the 50 fetches its script sends at once carry
    # it and take turns on one session. Sent before any cookie exists, each would
    # start a session of its own, and the cart would keep one item.
    request.session.setdefault("cart", [])
    return HttpResponse(PAGE)


@require_GET
@uses_session("read")  # reading the cart takes no lock
def cart(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"items": request.session.get("cart", [])})


@require_POST
def add(request: HttpRequest) -> HttpResponse:
    items = request.session.get("cart", [])
    time.sleep(0.01)  # a view that does some work between its read and its write
    request.session["cart"] = [*items, request.GET.get("item", "?")]
    return JsonResponse({"count": len(request.session["cart"])})


@require_POST
def clear(request: HttpRequest) -> HttpResponse:
    request.session["cart"] = []
    return JsonResponse({"count": 0})


urlpatterns = [path("", home), path("cart", cart), path("cart/add", add),
               path("cart/clear", clear)]

if __name__ == "__main__":
    port = os.environ.get("PORT", "8002")
    execute_from_command_line([sys.argv[0], "runserver", f"127.0.0.1:{port}", "--noreload"])
