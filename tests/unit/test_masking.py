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
    masker = Masker(["abcd", "abcdefgh", "x" * (MIN_MASKED_LENGTH - 1)])
    assert masker("abcdefgh abcd xxx") == "*** *** xxx"
    assert "abcd" in masker and "xxx" not in masker


def test_values_added_later_are_masked_too():
    masker = Masker()
    assert masker("token t0k3n-value") == "token t0k3n-value"
    masker.add(["t0k3n-value", None])
    assert masker("token t0k3n-value") == "token ***"
