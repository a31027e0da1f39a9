"""The one mapping from dataset ids and episode keys to file names inside a run folder.

Sample ids come from manifests and grouping files that the toolkit does not control: an id such
as ``../../x``, ``/abs/x`` or one with a control character must never become a path that leaves
the run folder. :func:`file_name` percent-escapes every character outside ``[A-Za-z0-9_.-]``
(``/`` included) and a leading dot, so the result is always one plain, non-hidden path component;
the escaping is injective (two different ids never share a name; on a case-insensitive file
system ids that differ only in case still do) and, up to :data:`MAX_NAME` characters, reversible
with :func:`urllib.parse.unquote`. Longer names keep a readable prefix and gain a hash of the id.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

#: Longest file name (bytes, before the extension) written as is; longer ones are shortened.
MAX_NAME = 180


def escape(part: str) -> str:
    """Percent-escape ``part`` so that it holds only ``[A-Za-z0-9_.~%-]`` (``/`` and ``+`` escaped)."""
    return quote(part, safe="-_.")  # quote always leaves letters, digits and "_.-~"


def file_name(identifier: str, suffix: str = "") -> str:
    """A single safe path component for ``identifier`` (plus ``suffix``, e.g. ``".png"``).

    Raises ``ValueError`` for an empty identifier (no file can be named after it)."""
    if not identifier:
        raise ValueError("an empty id cannot name a file")
    name = escape(identifier).replace("~", "%7E")
    if name.startswith("."):  # ".", ".." and hidden files
        name = "%2E" + name[1:]
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(identifier.encode()).hexdigest()[:16]
        name = f"{name[:MAX_NAME - 17]}-{digest}"
    return name + suffix


def hashed_name(key: str, suffix: str = "") -> str:
    """A readable but lossy prefix of ``key`` plus 64 bits of its hash: unique file names for long keys."""
    clean = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "~" for c in key)[:80].lstrip(".")
    return f"{clean}-{hashlib.sha256(key.encode()).hexdigest()[:16]}{suffix}"
