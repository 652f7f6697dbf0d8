"""Fixtures of the fast lane: an in-process sync against real local Git and a fake Compose."""

from __future__ import annotations

import io

import pytest

from composeflux import config as configuration, logs, state, sync
from composeflux.errors import ExitStatus
from tests.fakes.compose import FakeCompose


@pytest.fixture(scope="session")
def quiet_git_config(tmp_path_factory):
    """A global git configuration of the tests' own, for these throw-away repositories: no
    background housekeeping after every push and fetch, no sample hooks copied into every new
    repository (most of the processes and files the lane would otherwise make)."""
    directory = tmp_path_factory.mktemp("git")
    (directory / "templates").mkdir()
    path = directory / "config"
    path.write_text(f"[gc]\n\tauto = 0\n[maintenance]\n\tauto = false\n[init]\n\ttemplateDir = {directory / 'templates'}\n")
    return path


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch, quiet_git_config):
    """No user or system git configuration (insteadOf, hooks, default branch) in these tests,
    for the git the tests run and the git composeflux runs."""
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(quiet_git_config))


class Runner:
    def __init__(self, repo, tmp_path):
        self.repo = repo
        self.state_dir = tmp_path / "state"
        self.spool = tmp_path / "spool"
        self.conf = tmp_path / "composeflux.conf"
        self.conf.write_text("")
        self.compose = FakeCompose()
        self.settings = {
            "STATE_DIRECTORY": str(self.state_dir),
            "RUNTIME_DIRECTORY": str(tmp_path / "run"),
            "GIT_REPO_URL": str(repo.remote),
            "STACK_PATH": repo.stack_path,
            "TRIGGER_DIR": str(self.spool),
            "LOCAL_ENV_DIR": str(tmp_path / "local-env"),  # not the host's /etc/composeflux/stacks
            "HEALTH_STABLE": "0",  # the fake's containers never restart: no stability window to sit out
        }

    def __call__(
        self, *, dry_run: bool = False, allow_prune_all: bool = False, retry_failed: bool = False,
        adopt: frozenset[str] = frozenset(), retry: frozenset[str] = frozenset(), pull: dict | None = None, **settings: str,
    ) -> ExitStatus:
        """One sync with these settings on top of the defaults (strings, as in composeflux.conf)."""
        config = configuration.load(self.conf, environ={**self.settings, **settings})
        logs.setup_logging(config.log_level, config.log_format, config.masker)
        out = io.StringIO()
        options = sync.Options(
            dry_run=dry_run, allow_prune_all=allow_prune_all, retry_failed=retry_failed, adopt=adopt, retry=retry, pull=pull or {}
        )
        status = sync.run(config, options, tools=self.compose.tools(), out=out)
        self.out = out.getvalue()
        return status

    def state(self) -> state.State:
        return state.read(self.state_dir)


@pytest.fixture
def cfx(repo, tmp_path):
    return Runner(repo, tmp_path)
