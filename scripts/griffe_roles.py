"""A griffe extension for the API reference (mkdocs.yml): the docstrings'
Sphinx roles (``:class:`~sessionware.Rule```, ``:meth:`Store.sync```) become
cross-references of the site (``[Rule][sessionware.Rule]``), which
mkdocstrings' Sphinx-style parser would otherwise print as they are."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):`(?P<tilde>~?)(?P<target>[\w.]+)`")


def _reference(match: re.Match[str]) -> str:
    target = match["target"]
    title = target.rsplit(".", 1)[-1] if match["tilde"] else target
    parts = target.split(".")
    # a bare name has no identifier to link to, and private modules have no page
    if len(parts) == 1 or any(part.startswith("_") for part in parts):
        return f"`{title}`"
    return f"[`{title}`][{target}]"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_reference, obj.docstring.value)
