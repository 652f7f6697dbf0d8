"""Typed readers for settings (the merged KEY=VALUE mapping), with errors that name the key."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from composeflux.errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# A number of seconds may carry a unit, as in systemd: 90, 90s, 30min, 24h, 7d.
DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(s|sec|m|min|h|d)$", re.IGNORECASE)
UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def boolean(settings: Mapping[str, str], key: str, default: bool) -> bool:
    raw = settings.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ConfigError(f"{key}: expected true or false, got {raw!r}")


def seconds(settings: Mapping[str, str], key: str, default: float, *, allow_zero: bool = True, maximum: float | None = None) -> float:
    raw = settings.get(key, "").strip()
    if not raw:
        return default
    match = DURATION.match(raw)
    try:
        value = float(match.group(1)) * UNITS[match.group(2).lower()] if match else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # float() also takes "nan" and "inf"
        raise ConfigError(f"{key}: expected a number of seconds, got {raw!r}")
    if value < 0 or (value == 0 and not allow_zero) or (maximum is not None and value > maximum):
        lower = "at least 0" if allow_zero else "more than 0"
        upper = f" and at most {maximum:g}" if maximum is not None else ""
        raise ConfigError(f"{key}: must be {lower}{upper} seconds")
    return value


def choice(settings: Mapping[str, str], key: str, choices: tuple[str, ...], default: str) -> str:
    raw = settings.get(key, "").strip() or default
    for option in choices:
        if raw.lower() == option.lower():
            return option
    raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {raw!r}")


def integer(settings: Mapping[str, str], key: str, default: int, minimum: int, maximum: int) -> int:
    raw = settings.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}: expected a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{key}: must be from {minimum} to {maximum}")
    return value
