"""The worker runtime the CLI builds to open a BackupLocation's repository as an operation would."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from davit_cli.context import CliContext, admin_namespace
from davit_cli.errors import CliError

if TYPE_CHECKING:
    pass


def open_repository(cli: CliContext, namespace: str, location_name: str) -> Any:
    """The repository of the BackupLocation ``location_name`` as an operation in ``namespace`` sees it
    (its own namespace first, then the admin namespace's shared locations), its Secret resolved."""
    from davit.kube.operations import Operations
    from davit.operations import queueing
    from davit.operations.runtime import LocationUnavailable, Runtime
    from davit.settings import Settings

    settings = Settings(
        kubeconfig=cli.kubeconfig_path() or "",
        redis_url=cli.resolved_redis_url() or Settings().redis_url,
        admin_namespace=admin_namespace(),
        # The CLI reads a local location with its own user's permissions on its own machine, so any
        # directory is one that user may read anyway: the roots keep the cluster's services in, not it.
        local_location_roots="/",
    )
    api = cli.api()
    runtime = Runtime(
        settings=settings,
        api=api,
        redis=None,
        celery=queueing.create_app(settings.redis_url, "davit-cli"),
        ops=Operations(api),
    )
    try:
        return runtime.repository(namespace, location_name)
    except LocationUnavailable as exc:
        raise CliError(exc.reason) from exc
