"""The one masking policy: every credential and secret value, in every form it can be printed in.

One Masker is made per run (by `config.load`, which seeds it with every credential the
configuration holds) and secret values are added to it as soon as a provider returns them.
Everything composeflux shows passes through it: log records in every format (it is a logging
filter), `docker compose` output, HTTP client and command errors, git errors, the state file,
the dry-run plan and sd_notify STATUS.

A value is masked as written and in the escaped forms it takes when a tool quotes it: JSON
(`"a\\"b"`, also ASCII-only), Go's %q (Docker and Compose quote that way), Python's repr, URL
encoding (a password inside a URL) and shell quoting. Values shorter than the minimum length
(MASK_MIN_LENGTH, default 6) are used but not masked, since they would replace ordinary words
all over the log; the sync warns about each such secret by name.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
import urllib.parse
from collections.abc import Iterable

MASK = "***"
MIN_MASKED_LENGTH = 6
GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quoted(value: str) -> str:
    """The inside of Go's strconv.Quote / %q: printable characters as they are."""
    out = []
    for char in value:
        if char in GO_ESCAPES:
            out.append(GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def escaped_forms(value: str, min_length: int = MIN_MASKED_LENGTH) -> set[str]:
    """The value itself and each way a tool might have escaped it on its way into a message."""
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        go_quoted(value),
        repr(value)[1:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
        urllib.parse.quote(value),
        shlex.quote(value),
    }
    return {form for form in forms if len(form) >= min_length}


class Masker(logging.Filter):
    """Replaces known secret values with *** in log records and in any text it is given."""

    def __init__(self, values: Iterable[str] = (), min_length: int = MIN_MASKED_LENGTH) -> None:
        super().__init__()
        self.min_length = min_length
        self._values: set[str] = set()
        self._forms: list[str] = []
        self._adding = threading.Lock()
        self.add(values)

    def add(self, values: Iterable[str | None]) -> None:
        """Mask these values from now on. Safe from several threads (renders and deploys run
        side by side): additions are serialised, and masking reads the list of forms, which is
        replaced whole, never changed in place."""
        wanted = {v for v in values if isinstance(v, str) and len(v) >= self.min_length}
        with self._adding:
            new = wanted - self._values
            if not new:
                return
            self._values = self._values | new
            forms = set(self._forms)
            for value in new:
                forms |= escaped_forms(value, self.min_length)
            # Longest first, so a secret that contains another one is masked whole.
            self._forms = sorted(forms, key=len, reverse=True)

    def too_short(self, value: str) -> bool:
        """Whether this (non-empty) value is too short to be masked."""
        return 0 < len(value) < self.min_length

    def __contains__(self, value: object) -> bool:
        return value in self._values

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        record.msg, record.args, record.exc_text = self(message), (), None
        for field, value in list(vars(record).items()):  # the structured journal fields (logs.py)
            if field.startswith("COMPOSEFLUX_") and isinstance(value, str):
                setattr(record, field, self(value))
        return True
