"""Where the folders the bot reads at run time are: the migrations and the shipped scripts
sit inside the installed package (the wheel carries them as bot/shipped/, see setup.py),
or at the top of a checkout. And where a SQLite URL's file is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

PACKAGE = Path(__file__).resolve().parent


def shipped(folder: str) -> Path:
    """`migrations` or `scripts`: the installed package's copy, else the checkout's folder
    (a checkout, or an editable install, has no copy)."""
    installed = PACKAGE / "shipped" / folder
    return installed if installed.is_dir() else PACKAGE.parent / folder


def sqlite_file(url: str | URL) -> Path | None:
    """The file a SQLite URL opens, resolved as SQLite resolves it: a plain path (relative to
    the working directory) or, with `uri=true`, a `file:` URI (`file:/a/x.db`,
    `file:///a/x.db`, `file:x.db`, %-escapes decoded, its query ignored). None for an
    in-memory or temporary database. What sits beside the database (the single-instance
    lock) is placed from this, never from the URL's text: `file:/a/x.db` read as a path
    is a folder named `file:` in the working directory."""
    # Here, not at the top: the settings import this module, and they need no SQLAlchemy.
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
    from sqlalchemy.engine import make_url

    parsed = make_url(url) if isinstance(url, str) else url
    [name], options = SQLiteDialect_pysqlite().create_connect_args(parsed)
    filename = _uri_path(str(name)) if options.get("uri") else str(name)
    if filename is None or filename in ("", ":memory:"):
        return None
    return Path(os.path.abspath(filename))


def _uri_path(uri: str) -> str | None:
    """The file of a SQLite URI (sqlite.org/uri.html); None for an in-memory database. A text
    that does not start with `file:` is an ordinary file name there too."""
    if not uri.lower().startswith("file:"):
        return uri
    rest = uri[len("file:") :]
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    if rest.startswith("//"):
        # An authority, empty or "localhost" (SQLite refuses any other), then the path.
        _authority, slash, path = rest[2:].partition("/")
        rest = slash + path
    if ("mode", "memory") in parse_qsl(query.partition("#")[0]):
        return None
    return unquote(rest)
