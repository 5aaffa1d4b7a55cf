from __future__ import annotations

from django.urls import path

from tests.support.apps.django_site import views

urlpatterns = [
    path("inc", views.inc),
    path("ainc", views.ainc),
    path("n", views.read_n),
    path("an", views.aread_n),
    path("read", views.read_only),
    path("read-write", views.read_write),
    path("none", views.no_session),
    path("boom", views.boom),
    path("server-error", views.server_error),
    path("forbidden", views.forbidden),
    path("stream", views.stream),
    path("hold", views.hold),
    path("cycle", views.cycle),
    path("acycle", views.acycle),
    path("flush", views.flush),
    path("aflush", views.aflush),
    path("key", views.key),
    path("login", views.log_in),
    path("alogin", views.alog_in),
    path("logout", views.log_out),
    path("whoami", views.whoami),
    path("message", views.message),
    path("messages", views.show_messages),
    path("csrf", views.csrf),
    path("form", views.form),
    path("remember", views.remember),
    path("class-read", views.ClassRead.as_view()),
    path("class-exclusive", views.ClassRead.as_view(session_mode="exclusive")),
]
