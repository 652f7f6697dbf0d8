"""Exceptions that end a sync, and the exit status each one maps to.

The exit codes are part of the interface (systemd, scripts and the man page rely on them).
"""

EXIT_OK = 0
EXIT_STACKS_FAILED = 1  # the sync ran, but at least one stack failed to render or deploy
EXIT_USAGE = 2  # click's own code for a bad command line
EXIT_CONFIG = 3  # invalid configuration (composeflux.conf, environment, stack.yml)
EXIT_GIT = 4  # the Git repository could not be fetched or checked out
EXIT_SECRETS = 5  # the secrets provider failed
EXIT_UNSAFE = 6  # a prune was refused because it looked unsafe (see --allow-prune-all)
EXIT_BUSY = 7  # another sync held the lock for longer than we were willing to wait
EXIT_ENGINE = 8  # the Docker engine or Docker Compose could not be used
EXIT_INTERNAL = 70  # a bug in composeflux (EX_SOFTWARE)


class ComposefluxError(Exception):
    """An error that stops the whole sync before anything is changed."""

    exit_code = EXIT_STACKS_FAILED


class ConfigError(ComposefluxError):
    """Invalid configuration. The message names the file or variable and the key."""

    exit_code = EXIT_CONFIG


class GitSourceError(ComposefluxError):
    exit_code = EXIT_GIT


class SecretsError(ComposefluxError):
    """A secrets provider failed. The message names the provider, never a credential or value."""

    exit_code = EXIT_SECRETS


class UnsafePruneError(ComposefluxError):
    exit_code = EXIT_UNSAFE


class LockTimeoutError(ComposefluxError):
    exit_code = EXIT_BUSY


class EngineError(ComposefluxError):
    exit_code = EXIT_ENGINE
