"""``python -m davit_services.restore``: a worker on ``davit.restore``."""

from __future__ import annotations

from davit.constants import Queue
from davit.operations import workers
from davit_services.restore.tasks import SERVICE, app


def main() -> None:
    workers.main(app, Queue.RESTORE, SERVICE)


if __name__ == "__main__":
    main()
