import pytest

from composeflux.envfile import parse_env_text


def test_plain_comments_blank_lines_and_export():
    text = "# comment\n; also a comment\n\n  A=1\nexport B = two words  \nC=\nD=x#not-a-comment\n"
    assert parse_env_text(text, "t") == {"A": "1", "B": "two words", "C": "", "D": "x#not-a-comment"}


def test_quotes_and_escapes():
    text = "S='a \\ $b \"c\"'\nD=\"q\\\"x\\\\y\\$z\\`w\\n\"  \n"
    assert parse_env_text(text, "t") == {"S": 'a \\ $b "c"', "D": 'q"x\\y$z`w\\n'}


def test_multiline_quoted_value_and_continuation():
    key = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n"
    text = f'KEY="{key}"\nJOINED="one \\\ntwo"\nAFTER=1\n'
    assert parse_env_text(text, "t") == {"KEY": key, "JOINED": "one two", "AFTER": "1"}


def test_unquoted_backslashes_follow_systemd():
    text = "A=a\\ b\\\\c\\#d\nB=one \\\n  two\nC=keep\\ \nD=trail   \n"
    assert parse_env_text(text, "t") == {"A": "a b\\c#d", "B": "one   two", "C": "keep ", "D": "trail"}


def test_last_assignment_wins_and_crlf():
    assert parse_env_text("A=1\r\nA=2\r\n", "t") == {"A": "2"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("A=1\nhunter2\n", "t:2: expected KEY=VALUE"),
        ("1A=hunter2\n", "t:1: invalid variable name before the ="),
        ("A-B=hunter2\n", "t:1: invalid variable name before the ="),
        ("hunter2/base64+secret==\n", "t:1: invalid variable name before the ="),  # a pasted secret, no name
        ("A='hunter2\n", "t:1: unterminated ' quote"),
        ('A="hunter2"x\n', "t:1: unexpected text after the closing quote"),
        ('A="hunter2" # comment\n', "t:1: unexpected text after the closing quote"),
    ],
)
def test_errors_name_the_line_not_the_value(text, message):
    with pytest.raises(ValueError) as info:
        parse_env_text(text, "t")
    assert str(info.value).startswith(message)
    assert "hunter2" not in str(info.value)


def test_scoped_names_only_with_the_secret_keys_rule():
    """STACK/NAME is a name only where a secrets file or command is parsed, not in composeflux.conf."""
    from composeflux.secrets import SECRET_KEYS

    text = "A=1\nplex/A=2\nexport my-app.v2/B = three\n"
    assert parse_env_text(text, "t", SECRET_KEYS) == {"A": "1", "plex/A": "2", "my-app.v2/B": "three"}
    with pytest.raises(ValueError) as info:
        parse_env_text(text, "t")
    assert str(info.value) == "t:2: invalid variable name before the = (letters, digits and _, not starting with a digit)"


@pytest.mark.parametrize("name", ["a/b/C", "/C", ".x/C", "x/", "x/1C", "x y/C", "hunter2/base64+secret"])
def test_malformed_scoped_names_are_refused_without_quoting_them(name):
    from composeflux.secrets import SECRET_KEYS

    with pytest.raises(ValueError) as info:
        parse_env_text(f"{name}=hunter2\n", "t", SECRET_KEYS)
    assert str(info.value).startswith("t:1: invalid variable name before the = (NAME or STACK/NAME; ")
    assert name not in str(info.value) and "hunter2" not in str(info.value)
