"""``python -m davit_services.watcher`` (or ``davit-watcher``): run the watcher until SIGTERM."""

from __future__ import annotations

import signal
import threading

from davit import logs
from davit.kube import clients
from davit.settings import Settings
from davit_services.watcher.service import Watcher


def main(argv: list[str] | None = None) -> None:
    settings = Settings.from_args(argv, description="Davit watcher")
    logs.configure("watcher", settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    api = clients.api_client(
        settings.kubeconfig or None, qps=settings.api_qps, burst=settings.api_burst, component="watcher"
    )
    Watcher(settings, api).run(stop)


if __name__ == "__main__":
    main()
