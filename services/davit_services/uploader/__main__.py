"""``python -m davit_services.uploader`` (DAVIT_NODE_NAME set): the node agent of one node."""

from __future__ import annotations

import sys

from davit.operations import workers
from davit_services.uploader.tasks import QUEUE, SERVICE, app, settings


def main() -> None:
    if not settings.node_name:
        sys.exit("DAVIT_NODE_NAME must name the node this agent runs on")
    workers.main(app, QUEUE, SERVICE)


if __name__ == "__main__":
    main()
