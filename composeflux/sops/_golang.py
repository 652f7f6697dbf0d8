"""Go's spelling of scalars, as SOPS (a Go program) reads and writes them.

The MAC covers every value as Go turns it into bytes, and a decrypted value is parsed the way
Go's strconv parses it, so a decryptor that spells `1234568000.0` as Python does computes another
MAC. Each function here names the Go function it stands for:

    format_float_f     strconv.FormatFloat(f, 'f', -1, 64)      the MAC's bytes of a float
    format_float_g     stores.ValToString(float64)              dotenv/INI text of a float
    format_float_json  encoding/json's float encoding           JSON output
    parse_int          strconv.Atoi                             a decrypted `type:int`
    parse_float        strconv.ParseFloat(s, 64)                a decrypted `type:float`
    parse_bool         strconv.ParseBool                        a decrypted `type:bool`
    GoTime             time.Time: RFC 3339 to the nanosecond, its UTC offset kept
    go_string          stores.ValToString                       dotenv/INI text of any scalar
    to_bytes           sops.ToBytes                             what the MAC hashes

Float digits: Python's repr and Go's shortest formatting both produce the shortest decimal that
reads back to the same float (and the closest of those), so the digits agree; only the layout
(exponent, trailing `.0`) differs, and that is what these functions rebuild.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import NamedTuple

from composeflux.sops._errors import SopsError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _decimal_digits(value: float) -> tuple[str, int]:
    """The shortest round-trip digits of abs(value) without leading or trailing zeros, and the
    decimal point position: value == 0.<digits> * 10**point. Zero is ("", 0), as in Go."""
    text = repr(abs(value))
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    stripped = digits.lstrip("0")
    point = len(whole) + (int(exponent) if exponent else 0) - (len(digits) - len(stripped))
    stripped = stripped.rstrip("0")
    if not stripped:
        return "", 0
    return stripped, point


def _special(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def _fixed(digits: str, point: int, decimals: int) -> str:
    """Go's fmtF: the integer part, then `decimals` digits after the point (zero-filled)."""
    whole = (digits[:point] + "0" * max(point - len(digits), 0)) if point > 0 else "0"
    if decimals <= 0:
        return whole
    fraction = "".join(digits[i] if 0 <= i < len(digits) else "0" for i in range(point, point + decimals))
    return f"{whole}.{fraction}"


def _exponent(digits: str, point: int, decimals: int, letter: str) -> str:
    """Go's fmtE: d.ddd then e±dd (at least two exponent digits)."""
    first = digits[:1] or "0"
    text = first
    if decimals > 0:
        text += "." + (digits[1 : 1 + decimals] + "0" * decimals)[:decimals]
    exponent = point - 1 if digits else 0
    sign = "-" if exponent < 0 else "+"
    return f"{text}{letter}{sign}{abs(exponent):02d}"


def format_float_f(value: float) -> str:
    """strconv.FormatFloat(value, 'f', -1, 64): shortest digits, never an exponent, no `.0`
    (`1234568000`, `25.4`, `-0`, `+Inf`, `NaN`)."""
    special = _special(value)
    if special is not None:
        return special
    digits, point = _decimal_digits(value)
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    return sign + _fixed(digits, point, max(len(digits) - point, 0))


def _format_float_g(value: float) -> str:
    """strconv.FormatFloat(value, 'G', -1, 64): %E when the exponent is < -4 or >= 6 (Go decides
    with precision 6 when the precision is the shortest), else %F."""
    special = _special(value)
    if special is not None:
        return special
    digits, point = _decimal_digits(value)
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        return sign + _exponent(digits, point, len(digits) - 1, "E")
    return sign + _fixed(digits, point, max(len(digits) - point, 0))


def format_float_g(value: float) -> str:
    """stores.ValToString of a float64: %G, then one decimal added when that shows neither a
    point nor an exponent (`25.4`, `1.0`, `100000.0`, `1.234568E+09`)."""
    text = _format_float_g(value)
    if "." not in text and "E" not in text and _special(value) is None:
        # %G wrote a whole number: Go then writes FormatFloat(value, 'f', 1), the same digits and ".0".
        text += ".0"
    return text


def format_float_json(value: float) -> str:
    """encoding/json's float64: 'f' unless abs < 1e-6 or >= 1e21, then 'e' with `e-07` written
    `e-7`. SopsError for NaN and infinities, which JSON cannot hold (json.Marshal fails too)."""
    if math.isnan(value) or math.isinf(value):
        raise SopsError("a float value is not finite, which JSON cannot hold")
    absolute = abs(value)
    if absolute != 0 and (absolute < 1e-6 or absolute >= 1e21):
        digits, point = _decimal_digits(value)
        sign = "-" if value < 0 else ""
        text = sign + _exponent(digits, point, len(digits) - 1, "e")
        return re.sub(r"e-0(\d)$", r"e-\1", text)
    return format_float_f(value)


_ATOI = re.compile(r"[+-]?[0-9]+\Z")
_DECIMAL_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_SPECIAL_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan)\Z", re.IGNORECASE)
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+\Z")


def parse_int(text: str) -> int:
    """strconv.Atoi on a 64-bit platform: decimal, optional sign, int64. ValueError otherwise."""
    if not _ATOI.match(text):
        raise ValueError("not an integer")
    number = int(text)
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError("integer out of range")
    return number


def parse_float(text: str) -> float:
    """strconv.ParseFloat(text, 64): decimal, hex (with a p exponent), inf/infinity/nan; a value
    that overflows is an error, as in Go. ValueError otherwise."""
    if _SPECIAL_FLOAT.match(text):
        return float(text)
    if _DECIMAL_FLOAT.match(text):
        number = float(text)
    elif _HEX_FLOAT.match(text):
        number = float.fromhex(text)
    else:
        raise ValueError("not a float")
    if math.isinf(number):
        raise ValueError("float out of range")
    return number


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """strconv.ParseBool. ValueError for anything else (sops writes `True`/`False`)."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a bool")


class GoTime(NamedTuple):
    """A Go time.Time as far as SOPS can tell times apart: the wall clock to the nanosecond and
    the UTC offset in seconds. `rfc3339nano()` is what the MAC hashes (Time.MarshalText)."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int
    nanosecond: int
    offset: int

    @classmethod
    def from_datetime(cls, value: datetime.datetime) -> GoTime:
        """A Python datetime (naive means UTC) as Go would hold it."""
        offset = value.utcoffset()
        seconds = int(offset.total_seconds()) if offset is not None else 0
        return cls(value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond * 1000, seconds)

    def _zone(self) -> str:
        if self.offset == 0:
            return "Z"
        sign = "-" if self.offset < 0 else "+"
        hours, minutes = divmod(abs(self.offset) // 60, 60)
        return f"{sign}{hours:02d}:{minutes:02d}"

    def _wall(self) -> str:
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}T{self.hour:02d}:{self.minute:02d}:{self.second:02d}"

    def rfc3339(self) -> str:
        """Format(time.RFC3339): whole seconds."""
        return self._wall() + self._zone()

    def rfc3339nano(self) -> str:
        """Format(time.RFC3339Nano), which MarshalText writes: the fraction without trailing
        zeros, `Z` for a zero offset. SopsError for a year Go cannot marshal (beyond 0-9999)."""
        if not 0 <= self.year <= 9999:
            raise SopsError("a time value has a year outside 0-9999")
        fraction = f".{self.nanosecond:09d}".rstrip("0") if self.nanosecond else ""
        return self._wall() + fraction + self._zone()

    def to_datetime(self) -> datetime.datetime:
        """The Python value for a tree: microseconds (Python's limit), its offset kept."""
        zone = datetime.UTC if self.offset == 0 else datetime.timezone(datetime.timedelta(seconds=self.offset))
        try:
            return datetime.datetime(self.year, self.month, self.day, self.hour, self.minute, self.second, self.nanosecond // 1000, zone)
        except ValueError:
            raise SopsError("a time value is outside what Python can represent") from None


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _build_time(fields: tuple[str | None, ...], fraction: str | None, zone: str | None) -> GoTime | None:
    year, month, day = (int(f or "0") for f in fields[:3])
    hour, minute, second = (int(f or "0") for f in fields[3:6])
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month) and hour < 24 and minute < 60 and second < 60):
        return None
    nanosecond = int((fraction[1:] + "000000000")[:9]) if fraction else 0
    offset = 0
    if zone and zone not in ("Z", "z"):
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 24 or minutes > 59:
            return None
        offset = (hours * 3600 + minutes * 60) * (-1 if zone[0] == "-" else 1)
    return GoTime(year, month, day, hour, minute, second, nanosecond, offset)


# yaml.v3 tries these layouts on a plain scalar that starts with four digits and a dash:
# "2006-1-2T15:4:5.999999999Z07:00" (also with a lower-case t), "2006-1-2 15:4:5.999999999" (UTC)
# and "2006-1-2" (midnight UTC). Single-digit fields are allowed; the fraction is optional.
_YAML_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"
    r"(?:(?:[Tt]([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})([.,][0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))"
    r"|(?: ([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})([.,][0-9]+)?))?\Z"
)
# time.Parse(time.RFC3339, s) and Time.UnmarshalText: two-digit fields, a T, a zone.
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})([.,][0-9]+)?(Z|z|[+-][0-9]{2}:[0-9]{2})\Z")


def parse_yaml_timestamp(text: str) -> GoTime | None:
    """The time yaml.v3 reads from a plain scalar, or None when it is no timestamp to yaml.v3."""
    if len(text) < 5 or text[4] != "-" or not text[:4].isdigit():
        return None
    match = _YAML_TIMESTAMP.match(text)
    if match is None:
        return None
    groups = match.groups()
    if groups[3] is not None:
        return _build_time(groups[:6], groups[6], groups[7])
    if groups[8] is not None:
        return _build_time(groups[:3] + groups[8:11], groups[11], None)
    return _build_time((*groups[:3], None, None, None), None, None)


def parse_rfc3339(text: str) -> GoTime:
    """time.Parse(time.RFC3339, text), as for `lastmodified` and a decrypted `type:time`.
    ValueError when it is not one."""
    match = _RFC3339.match(text)
    result = _build_time(match.groups()[:6], match.group(7), match.group(8)) if match else None
    if result is None:
        raise ValueError("not an RFC 3339 time")
    return result


def go_string(value: object) -> str:
    """stores.ValToString, how sops writes a scalar into dotenv and INI: floats with %G and at
    least one decimal, bools `true`/`false`, times RFC 3339. Two deliberate differences: null is
    the empty string (Go would write `<nil>`), bytes are read as UTF-8 (Go would write a list of
    numbers); SopsError when they are not UTF-8."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float_g(value)
    if isinstance(value, GoTime):
        return value.rfc3339()
    if isinstance(value, datetime.datetime):
        return GoTime.from_datetime(value).rfc3339()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise SopsError("a bytes value is not UTF-8 text") from None
    return str(value)


def to_bytes(value: object) -> bytes:
    """sops.ToBytes: what the MAC hashes for a leaf (str, bool, int, float, bytes, time)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return format_float_f(value).encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, GoTime):
        return value.rfc3339nano().encode()
    raise SopsError(f"a value of type {type(value).__name__} cannot be hashed")
