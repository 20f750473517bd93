"""Reading the dev API server's audit log (devstack/cluster.py logs every request for a davit.dev
resource): how many LISTs of a resource each Davit component made, in how many pages, and whether each
asked for a page size. The API load test and benchmark count with it."""

from __future__ import annotations

import json
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Lists:
    """The LIST requests of one component for one resource."""

    #: Lists begun (a request without a continue token); each may take several pages.
    lists: int = 0
    #: Every LIST request, pages included.
    pages: int = 0
    #: Requests without a `limit`: an unpaginated list of everything.
    unlimited: int = 0
    uris: list[str] = field(default_factory=list)


def component_of(user_agent: str) -> str:
    """``davit-watcher/0.1.0 …`` → ``davit-watcher``; anything else as it is."""
    return user_agent.split("/", 1)[0] if user_agent else ""


def count_lists(audit_log: Path, resource: str, since: str = "") -> dict[str, Lists]:
    """Per component (user agent), the LIST requests for ``resource`` logged at or after the audit
    timestamp ``since`` (RFC 3339, compared as text: the log's own format)."""
    found: dict[str, Lists] = defaultdict(Lists)
    if not audit_log.exists():
        return {}
    for line in audit_log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("verb") != "list" or (event.get("objectRef") or {}).get("resource") != resource:
            continue
        if since and str(event.get("requestReceivedTimestamp", "")) < since:
            continue
        uri = str(event.get("requestURI", ""))
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
        entry = found[component_of(str(event.get("userAgent", "")))]
        entry.pages += 1
        entry.uris.append(uri)
        if "continue" not in query:
            entry.lists += 1
        if "limit" not in query:
            entry.unlimited += 1
    return dict(found)
