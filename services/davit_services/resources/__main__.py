"""``python -m davit_services.resources``: a worker on ``davit.export``."""

from __future__ import annotations

from davit.constants import Queue
from davit.operations import workers
from davit_services.resources.tasks import SERVICE, app


def main() -> None:
    workers.main(app, Queue.EXPORT, SERVICE)


if __name__ == "__main__":
    main()
