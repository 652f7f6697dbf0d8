"""One masking policy: a value is masked as written and in every escaped form tools print."""

import json
import shlex
import urllib.parse

import pytest

from composeflux.masking import MASK, MIN_MASKED_LENGTH, Masker

SECRET = 'pa ss"w/o\\rd&é'


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        json.dumps(SECRET),
        json.dumps(SECRET, ensure_ascii=False),
        repr(SECRET),
        urllib.parse.quote(SECRET, safe=""),
        urllib.parse.quote_plus(SECRET),
        shlex.quote(SECRET),
    ],
    ids=["plain", "json", "json-utf8", "repr", "url", "url-plus", "shell"],
)
def test_every_escaped_form_is_masked(form):
    masker = Masker([SECRET])
    shown = masker(f"before {form} after")
    assert shown.startswith("before ") and shown.endswith(" after")
    assert MASK in shown
    for piece in ("pa ss", "w/o", "o\\\\rd", "o%5Crd", "o\\rd"):
        assert piece not in shown, (form, shown)


def test_longest_value_first_and_short_values_left_alone():
    masker = Masker(["abcd", "abcdefgh", "xxx"], min_length=4)
    assert masker("abcdefgh abcd xxx") == "*** *** xxx"
    assert "abcd" in masker and "xxx" not in masker


def test_the_default_minimum_is_six_characters():
    assert MIN_MASKED_LENGTH == 6
    masker = Masker(["12345", "123456"])
    assert masker("12345 123456") == "12345 ***"
    assert masker.too_short("12345") and not masker.too_short("123456") and not masker.too_short("")


def test_values_added_later_are_masked_too():
    masker = Masker()
    assert masker("token t0k3n-value") == "token t0k3n-value"
    masker.add(["t0k3n-value", None])
    assert masker("token t0k3n-value") == "token ***"


def test_gos_quoting_is_masked_too():
    """Docker and Compose print values with Go's %q: control characters as \\t, \\x01, \\u2028."""
    secret = 'tab\there\x01"q\u2028z'
    go_form = '"tab\\there\\x01\\"q\\u2028z"'  # what fmt.Sprintf("%q", secret) prints
    shown = Masker([secret])(f"invalid value {go_form} for X")
    assert shown == 'invalid value "***" for X'
