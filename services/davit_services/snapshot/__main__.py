"""``python -m davit_services.snapshot``: a worker on ``davit.snapshot``."""

from __future__ import annotations

from davit import workers
from davit.constants import Queue
from davit_services.snapshot.tasks import SERVICE, app


def main() -> None:
    workers.main(app, Queue.SNAPSHOT, SERVICE)


if __name__ == "__main__":
    main()
