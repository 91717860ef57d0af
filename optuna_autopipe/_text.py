"""Small text helpers shared by the command line and the benchmark's reports."""

from __future__ import annotations


def count(n: int, one: str, many: str | None = None) -> str:
    """``n`` with its noun in the matching number: ``count(1, "trial")`` is ``"1 trial"``,
    ``count(3, "study", "studies")`` is ``"3 studies"`` (``many`` defaults to ``one + "s"``)."""
    return f"{n} {one if n == 1 else many or one + 's'}"
