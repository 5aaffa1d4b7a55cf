"""``python -m sessionware``: the ``sessionware`` command (sessionware.cli)."""

from __future__ import annotations

import sys


def main() -> None:
    """The console script: the command, or one line saying what to install."""
    try:
        from sessionware.cli import main as run
    except ImportError as exc:
        if exc.name != "click":
            raise
        sys.exit("sessionware: the command needs click: pip install 'sessionware[cli]'")
    run()


if __name__ == "__main__":
    main()
