"""split_scopes: fetch()'s flat mapping of NAME and STACK/NAME keys, split into shared and per-stack secrets."""

import pytest

from composeflux.errors import ExitStatus, SecretsError
from composeflux.secrets import (
    SCOPE_SEPARATOR,
    Scopes,
    is_valid_key,
    is_valid_stack_name,
    key_problem,
    scoped_key,
    split_scopes,
)


def test_globals_and_stacks_are_split():
    scopes = split_scopes(
        {"DB_PASSWORD": "v-global", "plex/DB_PASSWORD": "v-plex", "plex/TOKEN": "v-token", "my-app.v2/_X": "v-app"}
    )
    assert scopes == Scopes(
        shared={"DB_PASSWORD": "v-global"},
        stacks={"plex": {"DB_PASSWORD": "v-plex", "TOKEN": "v-token"}, "my-app.v2": {"_X": "v-app"}},
    )


def test_nothing_gives_nothing():
    assert split_scopes({}) == Scopes({}, {})


def test_only_scoped_secrets():
    assert split_scopes({"web/A": "1"}) == Scopes({}, {"web": {"A": "1"}})


def test_the_input_is_not_changed_and_the_result_is_its_own():
    values = {"A": "1", "web/A": "2"}
    scopes = split_scopes(values)
    scopes.shared["B"] = "3"
    scopes.stacks["web"]["B"] = "4"
    assert values == {"A": "1", "web/A": "2"}


def test_scoped_key_round_trips():
    assert SCOPE_SEPARATOR == "/"
    assert scoped_key("plex", "TOKEN") == "plex/TOKEN"
    assert split_scopes({scoped_key("plex", "TOKEN"): "v"}).stacks == {"plex": {"TOKEN": "v"}}


@pytest.mark.parametrize("name", ["plex", "Plex", "0day", "my-app", "my_app", "app.v2", "a", "a-", "a."])
def test_valid_stack_names(name):
    assert is_valid_stack_name(name)
    assert is_valid_key(f"{name}/TOKEN")


@pytest.mark.parametrize("name", ["", "-app", "_app", ".app", "my app", "app/x", "äpp", "app\n"])
def test_invalid_stack_names(name):
    assert not is_valid_stack_name(name)


@pytest.mark.parametrize(
    "key, problem",
    [
        ("db password", "is not a valid variable name (letters, digits and _, not starting with a digit)"),
        ("1A", "is not a valid variable name (letters, digits and _, not starting with a digit)"),
        ("", "is not a valid variable name (letters, digits and _, not starting with a digit)"),
        ("a/b/C", "has more than one / (expected NAME or STACK/NAME)"),
        ("a//C", "has more than one / (expected NAME or STACK/NAME)"),
        ("/C", "has no valid stack name before the / (letters, digits, '.', '_' and '-', starting with a letter or digit)"),
        ("-a/C", "has no valid stack name before the / (letters, digits, '.', '_' and '-', starting with a letter or digit)"),
        ("a/", "has no valid variable name after the / (letters, digits and _, not starting with a digit)"),
        ("a/1C", "has no valid variable name after the / (letters, digits and _, not starting with a digit)"),
        ("a/C-D", "has no valid variable name after the / (letters, digits and _, not starting with a digit)"),
    ],
)
def test_malformed_keys_are_errors_naming_the_key_not_the_value(key, problem):
    assert key_problem(key) == problem
    assert not is_valid_key(key)
    with pytest.raises(SecretsError) as info:
        split_scopes({"OK": "v-ok", key: "v-secret-value"})
    assert str(info.value) == f"secrets: the key {key!r} {problem}"
    assert "v-secret-value" not in str(info.value)
    assert info.value.status is ExitStatus.SECRETS


@pytest.mark.parametrize("key", ["A", "_a", "a_1", "plex/A", "my-app.v2/_1"])
def test_valid_keys(key):
    assert key_problem(key) is None
    assert is_valid_key(key)
