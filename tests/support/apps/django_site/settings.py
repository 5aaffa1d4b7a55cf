"""The test project's settings: sessionware in place of django.contrib.sessions,
with contrib.auth, contrib.messages on the session and CSRF_USE_SESSIONS."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "django-test-secret-0123456789abcdef0123456789abcdef"  # 50 characters
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.support.apps.django_site.urls"
WSGI_APPLICATION = "tests.support.apps.django_site.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",  # its clearsessions command
    "django.contrib.messages",
]

MIDDLEWARE = [
    "sessionware.django.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

SESSION_ENGINE = "sessionware.django.engine"
SESSIONWARE = {"STORE_URL": os.environ.get("SESSIONWARE_STORE_URL", "memory://")}
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
CSRF_USE_SESSIONS = True

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SESSIONWARE_DJANGO_DB",
                               os.path.join(tempfile.gettempdir(), "sessionware-django.sqlite3")),
    },
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
