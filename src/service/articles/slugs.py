"""URL-safe ASCII slugs from titles: Unicode folded to ASCII, lower-case, hyphen-separated."""

import re
import secrets

from anyascii import anyascii

MAX_BASE_LENGTH = 200
# Paths under /articles/ that are routes of their own: an article may never answer at one of them.
RESERVED = frozenset({"feed"})
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def slugify(title: str) -> str:
    """``"Crème brûlée: 10 ways!"`` -> ``"creme-brulee-10-ways"``; no letters or digits at all -> ``"article"``."""
    text = _NON_ALNUM.sub("-", anyascii(title).lower()).strip("-")
    if len(text) > MAX_BASE_LENGTH:
        text = text[:MAX_BASE_LENGTH].rsplit("-", 1)[0] or text[:MAX_BASE_LENGTH]
    return text or "article"


def with_suffix(base: str) -> str:
    """A distinct slug for a duplicate title: a short random suffix, so concurrent creators never collide twice."""
    return f"{base}-{secrets.token_hex(4)}"
