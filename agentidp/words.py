"""Counts and moments in words, for the sentences people read (the admin's confirmation pages,
the controls' causes and summaries, the auditors' report)."""

from datetime import UTC, datetime


def plural(count: int, singular: str, plural_form: str | None = None, *, zero: str = "") -> str:
    """``1 token``, ``3 tokens``; with ``zero`` (say ``"no"``), ``no tokens`` for none."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{zero if count == 0 and zero else count} {word}"


def minute_utc(moment: datetime) -> str:
    """``2026-12-07 06:47 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
