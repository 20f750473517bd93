"""``python -m davit_services.retention``: a worker on ``davit.retention``."""

from __future__ import annotations

from davit.constants import Queue
from davit.operations import workers
from davit_services.retention.tasks import SERVICE, app


def main() -> None:
    workers.main(app, Queue.RETENTION, SERVICE)


if __name__ == "__main__":
    main()
