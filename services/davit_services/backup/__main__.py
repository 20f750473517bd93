"""``python -m davit_services.backup``: a worker on ``davit.snapshot``."""

from __future__ import annotations

from davit.constants import Queue
from davit.operations import workers
from davit_services.backup.tasks import SERVICE, app


def main() -> None:
    workers.main(app, Queue.SNAPSHOT, SERVICE)


if __name__ == "__main__":
    main()
