"""A small Django project for the tests: ``DJANGO_SETTINGS_MODULE =
"tests.support.apps.django_site.settings"``, in process or in a server's
process (gunicorn, uvicorn). Its store is ``SESSIONWARE_STORE_URL`` when set
(``memory://`` otherwise), its database ``SESSIONWARE_DJANGO_DB``."""
