"""composeflux: GitOps for Docker Compose stacks, one sync per run."""

__version__ = "0.3.0"
