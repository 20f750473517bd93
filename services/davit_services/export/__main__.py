"""``python -m davit_services.export``: a worker on ``davit.export``."""

from __future__ import annotations

from davit import workers
from davit.constants import Queue
from davit_services.export.tasks import SERVICE, app


def main() -> None:
    workers.main(app, Queue.EXPORT, SERVICE)


if __name__ == "__main__":
    main()
