"""Compose's unset-variable warning, in the forms `docker compose config` prints it."""

from composeflux.compose import unset_variables

PLAIN = 'The "{}" variable is not set. Defaulting to a blank string.'
LOGFMT = 'time="2024-05-01T10:00:00Z" level=warning msg="The \\"{}\\" variable is not set. Defaulting to a blank string."'


def test_plain_form():
    assert unset_variables(PLAIN.format("DB_PASSWORD")) == ["DB_PASSWORD"]
    assert unset_variables("WARN[0000] " + PLAIN.format("TAG")) == ["TAG"]


def test_logfmt_escaped_form():
    line = LOGFMT.format("API_KEY")
    assert '\\"API_KEY\\"' in line  # really the escaped form
    assert unset_variables(line) == ["API_KEY"]


def test_several_variables_sorted_each_once():
    stderr = "\n".join(
        [
            LOGFMT.format("ZETA"),
            PLAIN.format("ALPHA"),
            LOGFMT.format("ALPHA"),
            PLAIN.format("MID_1"),
            PLAIN.format("ZETA"),
        ]
    )
    assert unset_variables(stderr) == ["ALPHA", "MID_1", "ZETA"]


def test_nothing_from_unrelated_lines():
    stderr = "\n".join(
        [
            "",
            'level=warning msg="/srv/stacks/web/compose.yaml: the attribute `version` is obsolete"',
            "service \"web\" refers to undefined network front: invalid compose project",
            'The variable "X" is used here',
            "The X variable is not set",  # no quotes: not Compose's message
            'level=warning msg="Found orphan containers ([old-1]) for this project."',
        ]
    )
    assert unset_variables(stderr) == []
    assert unset_variables("") == []
