"""What a driver's error means for a session, declared per store as a table
and applied here, once, for every store and both faces.

A store lists :class:`Row` s, most specific first; :meth:`ErrorTable.translate`
returns the error of the first row that matches, so that a store raises only
:class:`~sessionware.StoreError` subclasses (and ``LeaseLost``), each message
naming the backend, where it is, the operation and the driver's own words.
"""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from sessionware.exceptions import LeaseLost, StoreError, StoreUnavailable
from sessionware.stores.answers import Lease

__all__ = ["SETUP_HINT", "ErrorTable", "Meaning", "Row", "described", "lease_lost", "needs_extra"]

Errors = type[BaseException] | tuple[type[BaseException], ...]

SETUP_HINT = " (run the store's setup(), or create it: see its docs)"


class Meaning(enum.Enum):
    """What a driver error says of the operation it ended."""

    MAYBE_APPLIED = "the store is out of reach, and the operation may have been applied"
    NOT_APPLIED = "the store is out of reach, and nothing was applied"
    ERROR = "the store cannot serve this as configured: no retry passes it"


@dataclass(frozen=True)
class Row:
    """One line of a store's error table: errors of ``errors`` (for which
    ``when`` holds, during one of ``ops`` if given) mean ``means``: a
    :class:`Meaning`, or a store's own exception class for a condition its
    operations act on (made without arguments). ``hint`` ends the message
    (made from the error where it depends on more than the row)."""

    errors: Errors
    means: Meaning | type[Exception]
    when: Callable[[BaseException], bool] | None = None
    hint: str | Callable[[BaseException], str] = ""
    ops: frozenset[str] | None = None

    def matches(self, op: str, exc: BaseException) -> bool:
        return (isinstance(exc, self.errors) and (self.ops is None or op in self.ops)
                and (self.when is None or self.when(exc)))


def described(exc: BaseException) -> str:
    """The class and the message (many drivers' ``repr`` has no message),
    without the reply document pymongo appends (", full error: {...}")."""
    message = str(exc).split(", full error:")[0].strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@dataclass(frozen=True)
class ErrorTable:
    """A store's driver errors and what each means: the one place that
    decides. ``backend`` names the store in messages; ``describe`` renders a
    driver error (:func:`described` unless the driver's text needs trimming);
    ``reclassify`` first gives an error the class the driver left out."""

    backend: str
    rows: Sequence[Row]
    describe: Callable[[BaseException], str] = described
    reclassify: Callable[[BaseException], BaseException] | None = None

    @functools.cached_property
    def errors(self) -> tuple[type[BaseException], ...]:
        """Every error class the table translates (for an ``except`` clause)."""
        return tuple({cls for row in self.rows for cls in _classes(row.errors)})

    def translate(self, op: str, where: str, exc: BaseException) -> BaseException:
        """The exception to raise from ``exc`` (itself when no row matches)."""
        error = self.reclassify(exc) if self.reclassify is not None else exc
        for row in self.rows:
            if row.matches(op, error):
                if not isinstance(row.means, Meaning):
                    return row.means()
                hint = row.hint if isinstance(row.hint, str) else row.hint(error)
                message = f"{self.backend} at {where}, during {op}: {self.describe(exc)}"
                return _raised(row.means, message + hint)
        return exc

    def mapped(self, op: str, where: str) -> Mapped:
        """:meth:`translate` for a ``with`` block, the driver error as the cause."""
        return Mapped(self, op, where)


class Mapped:
    """The context manager of :meth:`ErrorTable.mapped`: a class, not a
    generator, since every store operation enters one (a quarter of the cost)."""

    __slots__ = ("_op", "_table", "_where")

    def __init__(self, table: ErrorTable, op: str, where: str) -> None:
        self._table, self._op, self._where = table, op, where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, self._table.errors):
            raise self._table.translate(self._op, self._where, exc) from exc


def _classes(errors: Errors) -> tuple[type[BaseException], ...]:
    return errors if isinstance(errors, tuple) else (errors,)


def _raised(means: Meaning, message: str) -> StoreError:
    if means is Meaning.ERROR:
        return StoreError(message)
    return StoreUnavailable(message, maybe_applied=means is Meaning.MAYBE_APPLIED)


def lease_lost(lease: Lease) -> LeaseLost:
    """The error of a fenced operation whose lease is no longer current."""
    return LeaseLost(f"lease {lease.token} on session {lease.key[:12]}… is not current")


@contextlib.contextmanager
def needs_extra(store: str, drivers: str, extra: str) -> Iterator[None]:
    """Around a store's driver imports: an :class:`ImportError` names what is
    missing and the extra that installs it."""
    try:
        yield
    except ImportError as exc:
        raise ImportError(f"{store} needs {drivers}: pip install sessionware[{extra}]") from exc
