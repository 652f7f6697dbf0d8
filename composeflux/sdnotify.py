"""sd_notify STATUS= for `systemctl status`; a no-op outside systemd. Masked like everything shown."""

from __future__ import annotations

import os

from composeflux.masking import Masker


class Notifier:
    def __init__(self, masker: Masker) -> None:
        self.masker = masker

    def __call__(self, status: str) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        try:
            from systemd import daemon
        except ImportError:
            return
        daemon.notify(f"STATUS={self.masker(status)}")
