"""KEY=VALUE text in the syntax of systemd's EnvironmentFile=, used by composeflux.conf,
the `file` secrets provider and the `command` provider's output.

    # comment            ; comment too (only at the start of a line)
    KEY=value            unquoted: the rest of the line, surrounding blanks removed; a
                         backslash takes the next character as is (\\# is #, \\\\ is \\),
                         and at the end of a line joins the next one
    KEY='literal $ \\'   single quotes: taken as they are, may span lines
    KEY="a \\"b\\" \\$c"   double quotes: \\" \\\\ \\$ \\` escape, backslash-newline joins lines,
                         any other backslash is kept; may span lines (e.g. an SSH key)
    export KEY=value     a leading `export ` is accepted, so shell-style files work

Names are variable names ([A-Za-z_][A-Za-z0-9_]*); a caller may accept others with its own
NameRule (the `file` and `command` secrets providers also take STACK/NAME, a secret of one stack).

These are systemd's rules (composeflux.conf is also read by the unit's EnvironmentFile=, and
both must agree), except that text after a closing quote is an error here rather than glued
on, and `export` is understood. A later assignment to the same key wins. Errors say
"source:line: what is wrong" and never quote a value: these files hold secrets.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Characters a backslash escapes inside double quotes (as in systemd and the shell).
_DOUBLE_QUOTE_ESCAPES = '"\\$`'


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


@dataclasses.dataclass(frozen=True)
class NameRule:
    """Which names before the = are accepted, and how an error message describes them."""

    check: Callable[[str], bool]
    description: str


VARIABLE_NAMES = NameRule(is_valid_name, "letters, digits and _, not starting with a digit")


def parse_env_text(text: str, source_name: str, names: NameRule = VARIABLE_NAMES) -> dict[str, str]:
    """Parse EnvironmentFile-style text into {name: value}; ValueError on malformed input."""
    lines = text.replace("\r\n", "\n").removeprefix("\ufeff").split("\n")
    result: dict[str, str] = {}
    index = 0
    while index < len(lines):
        lineno = index + 1
        line = lines[index].lstrip()
        index += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith(("export ", "export\t")):
            line = line[len("export") :].lstrip()
        name, sep, rest = line.partition("=")
        if not sep:
            # Don't echo the line: it might be a secret pasted without its name.
            raise ValueError(f"{source_name}:{lineno}: expected KEY=VALUE")
        name = name.strip()
        if not names.check(name):
            # Not quoted either: a pasted base64 secret ends in "=" and would be taken for a name.
            raise ValueError(f"{source_name}:{lineno}: invalid variable name before the = ({names.description})")
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            value, index = _parse_quoted(lines, index, rest, source_name, lineno)
        else:
            value, index = _parse_unquoted(lines, index, rest)
        result[name] = value
    return result


def _parse_unquoted(lines: list[str], index: int, text: str) -> tuple[str, int]:
    """Read an unquoted value that starts at `text`; returns it and the next line's index."""
    chars: list[str] = []
    escaped_up_to = 0  # trailing blanks are dropped, but not escaped ones
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char != "\\":
            chars.append(char)
            pos += 1
        elif pos + 1 < len(text):
            chars.append(text[pos + 1])
            escaped_up_to = len(chars)
            pos += 2
        elif index < len(lines):
            # Backslash at the end of the line joins it with the next one.
            text, pos, index = lines[index], 0, index + 1
        else:
            pos += 1
    value = "".join(chars)
    return value[:escaped_up_to] + value[escaped_up_to:].rstrip(), index


def _parse_quoted(lines: list[str], index: int, rest: str, source_name: str, lineno: int) -> tuple[str, int]:
    """Read a quoted value that starts at `rest` and may continue on lines[index:].

    Returns the value and the index of the first line after it.
    """
    quote = rest[0]
    text = rest[1:]
    chars: list[str] = []
    pos = 0
    while True:
        if pos >= len(text):
            # The value goes on past the end of this line.
            if index >= len(lines):
                raise ValueError(f"{source_name}:{lineno}: unterminated {quote} quote")
            chars.append("\n")
            text, pos, index = lines[index], 0, index + 1
            continue
        char = text[pos]
        if char == quote:
            if text[pos + 1 :].strip():
                raise ValueError(f"{source_name}:{index}: unexpected text after the closing quote")
            return "".join(chars), index
        if quote == '"' and char == "\\":
            if pos + 1 >= len(text):
                # Backslash at the end of the line joins it with the next one.
                if index >= len(lines):
                    raise ValueError(f"{source_name}:{lineno}: unterminated {quote} quote")
                text, pos, index = lines[index], 0, index + 1
                continue
            following = text[pos + 1]
            if following in _DOUBLE_QUOTE_ESCAPES:
                chars.append(following)
            else:
                chars.append("\\" + following)
            pos += 2
            continue
        chars.append(char)
        pos += 1
