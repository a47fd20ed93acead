"""TF Serving's on-disk rules, in one place for the catalog, the pusher and the server.

A model is ``<serving root>/<name>/``; a version is a child directory whose
name TF Serving parses as an int64. Keeping these rules in one module means
the pusher never counts a directory as a version that the server ignores, or
the other way round.
"""

from __future__ import annotations

import re

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
INT64_MAX = 2**63 - 1
_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale, skipped by TF Serving's safe_strto64
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def valid_model_name(name: str) -> bool:
    """True if ``name`` can be a model (and so a directory and URL segment) name."""
    return bool(MODEL_NAME.match(name)) and name not in (".", "..")


def parse_version(name: str) -> int | None:
    """The version a directory name stands for, or None when TF Serving ignores it.

    TF Serving parses names with safe_strto64: optional surrounding C whitespace, digits, int64
    range ('007' -> 7, '+3' and '3.partial' ignored). Unlike TF Serving, negative names ('-1')
    are ignored too: they are never valid versions to publish or to keep.
    """
    stripped = name.strip(_C_SPACE)
    if not _DIGITS.fullmatch(stripped):
        return None
    value = int(stripped)
    return value if value <= INT64_MAX else None
