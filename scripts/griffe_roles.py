"""A griffe extension for the API reference (mkdocs.yml): the docstrings'
reStructuredText that mkdocstrings' Sphinx-style parser would print as it is.
Roles (``:class:`~sessionware.Rule```) become cross-references of the site
(``[Rule][sessionware.Rule]``); the ``::`` that introduces a literal block
becomes ``:`` (a ``::`` alone on its line goes), the indented block itself
being a code block in Markdown too."""

from __future__ import annotations

import re
from typing import Any

import griffe

_LITERAL_ALONE = re.compile(r"^[ \t]*::[ \t]*\n", re.MULTILINE)
_LITERAL_AFTER = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)
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
            text = _ROLE.sub(_reference, obj.docstring.value)
            text = _LITERAL_AFTER.sub(":", _LITERAL_ALONE.sub("", text))
            obj.docstring.value = text
