"""The man pages, the default configuration and the shell completion stay in step with the code.

A new CLI option, command, exit code or configuration key fails here until it is documented.
"""

import re
import subprocess
from pathlib import Path

import click
import pytest

from composeflux import cli, config, errors

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"


def roff_text(path: Path) -> str:
    """The page's text with roff escapes for '-' undone, good enough to search for words."""
    text = path.read_text(encoding="utf-8")
    return text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


def commands():
    """(display name, click command) for every command composeflux offers."""
    yield "composeflux", cli.main
    for name, command in cli.main.commands.items():
        yield f"composeflux {name}", command
    yield "composeflux-sync", cli.sync_main


def all_options():
    for name, command in commands():
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts + param.secondary_opts:
                    yield name, opt


@pytest.mark.parametrize(("command", "option"), sorted(set(all_options())))
def test_every_cli_option_is_in_composeflux_8(command, option):
    page = roff_text(MAN / "composeflux.8")
    assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", page), f"{command} {option} missing from man/composeflux.8"


def test_every_command_has_a_section_in_composeflux_8():
    page = roff_text(MAN / "composeflux.8")
    commands_section = page.split(".SH COMMANDS", 1)[1].split(".SH ", 1)[0]
    for name in cli.main.commands:
        assert re.search(rf"^\.B {re.escape(name)}$", commands_section, re.M), f"command {name} missing from COMMANDS"
    # Commands the page documents must exist too (no stale entries).
    documented = re.findall(r"^\.TP\n\.B (\S+)$", commands_section, re.M)
    assert sorted(documented) == sorted(cli.main.commands)


def test_choices_are_documented():
    page = roff_text(MAN / "composeflux.8")
    for _, command in commands():
        for param in command.params:
            if isinstance(param.type, click.Choice):
                for choice in param.type.choices:
                    assert choice in page, f"{param.opts[0]} choice {choice} missing from composeflux(8)"


def test_every_exit_code_is_in_composeflux_8():
    page = roff_text(MAN / "composeflux.8")
    status = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\.B (\d+)$", status, re.M)}
    assert documented == {int(status) for status in errors.ExitStatus}


def test_every_configuration_key_is_in_composeflux_conf_5_and_the_default_file():
    page = roff_text(MAN / "composeflux.conf.5")
    default = (ROOT / "packaging" / "composeflux.conf").read_text()
    for key in sorted(config.known_keys()):
        assert re.search(rf"^\.B {key}$", page, re.M), f"{key} has no entry in composeflux.conf(5)"
        assert re.search(rf"^#{key}=", default, re.M), f"{key} missing from packaging/composeflux.conf"
    documented = set(re.findall(r"^\.TP\n\.B ([A-Z][A-Z0-9_]+)$", page, re.M))
    assert documented <= config.known_keys(), f"stale keys in composeflux.conf(5): {documented - config.known_keys()}"


def test_defaults_in_the_page_match_the_code():
    page = roff_text(MAN / "composeflux.conf.5")
    assert str(config.DEFAULT_KNOWN_HOSTS) in page
    assert str(config.DEFAULT_STATE_DIR) in page
    from composeflux import trigger

    assert str(trigger.DEFAULT_TRIGGER_DIR) in page
    assert str(trigger.DEFAULT_TRIGGER_DIR) in (ROOT / "packaging" / "systemd" / "composeflux.path").read_text()


def test_version_matches_the_pages_and_the_debian_changelog():
    from composeflux import __version__

    for page in MAN.glob("*.[58]"):
        text = page.read_text()
        if text.startswith(".so "):
            continue
        assert f'"composeflux {__version__}"' in text.splitlines()[0], page.name
    changelog = (ROOT / "packaging" / "debian" / "changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"composeflux ({__version__}"), changelog


@pytest.mark.parametrize("page", sorted(p.name for p in MAN.glob("*.[58]") if not p.read_text().startswith(".so ")))
def test_pages_render_without_warnings(page):
    if not Path("/usr/bin/man").exists():
        pytest.skip("man not installed")
    result = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", str(MAN / page)],
        capture_output=True, text=True, env={"LC_ALL": "C.UTF-8", "MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0
    assert result.stderr == "", result.stderr


@pytest.mark.parametrize("prog", ["composeflux", "composeflux-sync"])
def test_bash_completion_is_clicks(prog):
    script = (ROOT / "packaging" / "bash-completion" / prog).read_text()
    var = "_" + prog.replace("-", "_").upper() + "_COMPLETE"
    assert f"{var}=bash_complete" in script
    assert re.search(rf"complete .*-F \S+ {re.escape(prog)}$", script, re.M)


WEBHOOK_KEYS = ("WEBHOOK_SECRET", "WEBHOOK_IDLE", "WEBHOOK_WAIT_TIMEOUT", "WEBHOOK_REPOSITORY")


@pytest.mark.parametrize("key", WEBHOOK_KEYS)
def test_every_webhook_setting_is_in_composeflux_webhook_8(key):
    """The receiver's settings live in its unit's environment, not composeflux.conf: its own page says them."""
    from composeflux import webhook

    assert key in {webhook.SECRET_KEY, webhook.IDLE_KEY, webhook.WAIT_TIMEOUT_KEY, webhook.REPOSITORY_KEY}
    assert re.search(rf"(?<![\w-]){key}(?![\w-])", roff_text(MAN / "composeflux-webhook.8")), f"{key} missing from composeflux-webhook(8)"


def test_the_webhook_reads_no_other_setting_of_its_own():
    from composeflux import webhook

    source = Path(webhook.__file__).read_text()
    assert set(re.findall(r'"(WEBHOOK_[A-Z_]+)"', source)) == set(WEBHOOK_KEYS)
