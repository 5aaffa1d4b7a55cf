"""The ``sessionware`` command: look into a session store and act on it.

::

    sessionware --store URL [--secret KEY] [--json] COMMAND

    stats               live sessions, locks, user indexes, sizes (one pass)
    show REF            one session: its data, user, expiry, lock
    sessions USER       the live sessions bound to USER
    revoke REF          remove one session, even one a request holds
    revoke-user USER    remove every session of USER ("log out everywhere")
    purge               remove the expired records now

``REF`` is a store key (64 hex digits, as ``sessions`` and the events show
them), or the value of a session cookie, which needs the app's secret key
(``--secret`` or ``SESSIONWARE_SECRET``) to be read. ``--store`` defaults to
``SESSIONWARE_STORE_URL``, the variable the middlewares read too.

Exit status: 0 on success; 1 when the store fails or is out of reach, or the
session to show or revoke does not exist; 2 on a usage error (a bad URL, a
bad reference). Every failure is one line on stderr, never a traceback.
Built on click (``pip install sessionware[cli]``); run as ``sessionware`` or
``python -m sessionware``. It uses the blocking face of the store.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from sessionware._sync.admin import SyncSessionAdmin
from sessionware.config import SessionConfig
from sessionware.exceptions import ConfigurationError, StoreError
from sessionware.reports import SessionInfo, StoreStats, UserSession
from sessionware.urls import ENV_VAR, store_from_url

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

__all__ = ["cli", "main"]

SECRET_ENV_VAR = "SESSIONWARE_SECRET"
T = TypeVar("T")


class BadInput(click.ClickException):
    """A bad store URL or session reference: one line, exit status 2 (click's
    usage errors print the usage first, which says nothing about a URL)."""

    exit_code = 2


class Context:
    def __init__(self, url: str | None, secret: str | None, as_json: bool,
                 idle_timeout: float) -> None:
        self.url, self.secret, self.as_json = url, secret, as_json
        self.idle_timeout = idle_timeout

    @contextmanager
    def admin(self) -> Iterator[SyncSessionAdmin]:
        """The admin on the store's blocking face; every sessionware error
        becomes a one-line message and an exit status."""
        if not self.url:  # asked here, not by click: a command's --help needs no store
            raise click.UsageError(f"no store: pass --store URL or set {ENV_VAR} "
                                   f"(e.g. {ENV_VAR}=sqlite:///sessions.db)")
        try:
            store = store_from_url(self.url).sync()
        except ConfigurationError as exc:
            raise BadInput(str(exc)) from None
        # set_up=False: the command reads an existing store, and never makes one
        admin = SyncSessionAdmin(store, secret_key=self.secret, set_up=False,
                                 config=SessionConfig(idle_timeout=self.idle_timeout))
        try:
            with _translated():
                yield admin
        finally:
            with _translated():
                admin.close()

    def emit(self, value: Any, human: Callable[[], None]) -> None:
        if self.as_json:
            click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
        else:
            human()


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None
    except (StoreError, NotImplementedError) as exc:
        raise click.ClickException(_first_line(exc)) from None
    except ValueError as exc:  # a reference that names no session
        raise BadInput(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "url", envvar=ENV_VAR, metavar="URL",
              help=f"The store's URL (default: ${ENV_VAR}), e.g. sqlite:///sessions.db, "
                   "redis://host:6379/0, postgresql://user@host/db.")
@click.option("--secret", envvar=SECRET_ENV_VAR, default=None, metavar="KEY",
              help=f"The app's secret key, to read session cookie values "
                   f"(default: ${SECRET_ENV_VAR}).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
@click.option("--idle-timeout", type=float, default=SessionConfig().idle_timeout,
              show_default=True, metavar="SECONDS",
              help="The app's idle_timeout: last seen is a session's expiry minus this.")
@click.option("-v", "--verbose", is_flag=True,
              help="Show the store drivers' log (reconnection attempts, ...) on stderr.")
@click.version_option(package_name="sessionware")
@click.pass_context
def cli(ctx: click.Context, url: str | None, secret: str | None, as_json: bool,
        idle_timeout: float, verbose: bool) -> None:
    """Look into a sessionware store, and revoke sessions."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    else:
        # The failure is reported once, by the command; the drivers' retries
        # would otherwise reach stderr through logging's last-resort handler.
        logging.getLogger().addHandler(logging.NullHandler())
    ctx.obj = Context(url, secret, as_json, idle_timeout)


@cli.command()
@click.pass_obj
def stats(obj: Context) -> None:
    """Live sessions, locks, user indexes and sizes, in one pass over the store."""
    with obj.admin() as admin, _counter("scanning", obj) as bar:
        found = admin.stats(progress=bar.update)
    obj.emit(found.as_dict(), lambda: _print_stats(found))


@cli.command()
@click.argument("reference", metavar="REF")
@click.pass_obj
def show(obj: Context, reference: str) -> None:
    """One session (REF: a store key, or a cookie value with --secret; write
    `show -- REF` for a value that begins with -)."""
    with obj.admin() as admin:
        info = admin.show(reference)
    if info is None:
        _fail("no live session with that key")
    obj.emit(info.as_dict(), lambda: _print_info(info))


@cli.command()
@click.argument("user")
@click.pass_obj
def sessions(obj: Context, user: str) -> None:
    """The live sessions bound to USER (Session.bind_user)."""
    with obj.admin() as admin:
        found = admin.user_sessions(user)
    obj.emit([s.as_dict() for s in found], lambda: _print_sessions(user, found))


@cli.command()
@click.argument("reference", metavar="REF")
@click.pass_obj
def revoke(obj: Context, reference: str) -> None:
    """Remove one session, even one a request holds (its commit then fails)."""
    with obj.admin() as admin:
        key = admin.key_of(reference)
        removed = admin.revoke(key)
    if not removed:
        _fail("no live session with that key")
    obj.emit({"revoked": key}, lambda: click.echo(f"revoked {key}"))


@cli.command("revoke-user")
@click.argument("user")
@click.pass_obj
def revoke_user(obj: Context, user: str) -> None:
    """Remove every session of USER: log out everywhere."""
    with obj.admin() as admin:
        keys = admin.revoke_user(user)

    def human() -> None:
        click.echo(f"revoked {len(keys)} session{'s' * (len(keys) != 1)} of {user}")
        for key in keys:
            click.echo(f"  {key}")

    obj.emit({"user": user, "revoked": keys}, human)


@cli.command()
@click.pass_obj
def purge(obj: Context) -> None:
    """Remove the expired records now (stores also do it by themselves)."""
    with obj.admin() as admin, _counter("purging", obj) as bar:
        purged = admin.purge(progress=bar.update)
    obj.emit({"purged": purged},
             lambda: click.echo(f"purged {purged} expired record{'s' * (purged != 1)}"))


def _counter(label: str, obj: Context) -> ProgressBar[int]:
    """A running count on stderr for a long pass (its total is not known
    beforehand), on a terminal only and never with --json."""
    return click.progressbar(itertools.count(), label=label, show_pos=True, file=sys.stderr,
                             hidden=obj.as_json or not sys.stderr.isatty(),
                             update_min_steps=100)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _print_stats(found: StoreStats) -> None:
    rows = [("live sessions", found.sessions), ("locked now", found.locked),
            ("oldest lock", f"held {_age(found.oldest_lock)}" if found.locked else "-"),
            ("lapsed locks", found.lapsed),
            ("oldest lapsed", f"taken {_age(found.oldest_lapsed)} ago" if found.lapsed else "-"),
            ("retired ids", found.retired), ("user indexes", found.user_indexes)]
    for name, value in rows:
        click.echo(f"{name:<15}{value}")
    sizes = "  ".join(f"{k} {v}" for k, v in found.sizes.items()) or "-"
    click.echo(f"{'sizes (bytes)':<15}{sizes}")


def _print_info(info: SessionInfo) -> None:
    rows = [("key", info.store_key), ("kind", info.kind), ("user", info.user or "-"),
            ("size", f"{info.size} bytes"), ("created", _when(info.created_at)),
            ("last seen", _when(info.last_seen)), ("expires", _when(info.expires_at)),
            ("locked at", _when(info.locked_at)), ("locked until", _when(info.locked_until))]
    for name, value in rows:
        click.echo(f"{name:<13}{value}")
    click.echo("data")
    click.echo(json.dumps(info.data, indent=2, sort_keys=True, default=str))


def _print_sessions(user: str, found: list[UserSession]) -> None:
    if not found:
        click.echo(f"no live sessions of {user}")
        return
    click.echo(f"{'key':<66}{'created':<22}{'bound at':<22}{'last seen':<22}locked")
    for s in found:
        click.echo(f"{s.store_key:<66}{_when(s.created_at):<22}{_when(s.bound_at):<22}"
                   f"{_when(s.last_seen):<22}{'yes' if s.locked else 'no'}")


def main() -> None:
    """The console script."""
    cli(prog_name="sessionware")
