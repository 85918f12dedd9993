"""Tag normalisation: the one home for how a raw YFCC100M user tag becomes a vocabulary word.

The paper's cleaning: URL-decode, lowercase, remove ``+`` (and the spaces it encodes), drop every
tag containing a digit, and optionally keep only tags that have a word vector.
"""

from __future__ import annotations

from collections.abc import Container
from urllib.parse import unquote_plus

__all__ = ["BadTagEncoding", "normalise_tag", "normalise_tags", "split_user_tags"]


class BadTagEncoding(ValueError):
    """A raw tag that does not decode to text (invalid UTF-8 or control characters once URL-decoded)."""


def normalise_tag(raw: str, wordlist: Container[str] | None = None) -> str | None:
    """Return the normalised tag, or ``None`` when the paper's rules drop it; :class:`BadTagEncoding`
    when it does not decode to text.

    >>> normalise_tag("key+west+florida")
    'keywestflorida'
    >>> normalise_tag("New%20York")
    'newyork'
    >>> normalise_tag("route66") is None
    True
    """
    try:  # YFCC percent-encodes UTF-8: anything else (latin-1 '%E9', a NUL '%00') is a broken line
        tag = unquote_plus(raw, errors="strict").lower()
    except UnicodeDecodeError:
        raise BadTagEncoding(f"{raw[:40]!r} is not percent-encoded UTF-8") from None
    if not tag.isprintable():
        raise BadTagEncoding(f"{raw[:40]!r} decodes to control characters ({tag[:20]!r})")
    tag = tag.replace("+", "").replace(" ", "").strip()
    if not tag or any(c.isdigit() for c in tag):
        return None
    if wordlist is not None and tag not in wordlist:
        return None
    return tag


def split_user_tags(field: str) -> list[str]:
    """Split YFCC100M's user-tag column (comma-separated, each URL-encoded) into raw tags."""
    return [t for t in field.split(",") if t] if field else []


def normalise_tags(field: str, wordlist: Container[str] | None = None) -> list[str]:
    """Normalise a whole user-tag column, keeping order and duplicates as the paper did."""
    out = []
    for raw in split_user_tags(field):
        t = normalise_tag(raw, wordlist)
        if t is not None:
            out.append(t)
    return out
