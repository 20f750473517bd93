"""The errors Davit raises, as one tree: each class says whether doing the same work again may succeed.

``retryable`` is what the queue workers act on (``davit.operations.workers``): a retryable error is retried
with backoff and fails the operation when it persists; any other fails the operation at once, with the
error's ``reason`` as the operation's reason. Errors from outside Davit (the API server, Redis, the
network, bugs) are classified in ``davit.operations.workers.is_retryable``.

* ``DavitError``
  * ``Transient`` (retryable): the store, the API server or a pod did not answer as hoped this time.
  * ``Permanent`` (not retryable): the same input gives the same failure.
    * ``Refused``: refused by a rule (a tenancy guard, a name, a changed spec); never retried.
    * ``Unreadable``: what a location holds cannot be read; reading it again gives the same bytes.
    * ``Invalid``: the input (a message, a policy, a rule, a command line) cannot be used as it is.

Existing classes keep their names, modules and constructors; where callers catch a builtin
(``except ValueError``) the class inherits from that builtin too.
"""

from __future__ import annotations

from typing import ClassVar


class DavitError(Exception):
    """Base of every error Davit raises on purpose."""

    #: Whether doing the same work again may succeed: the workers retry it, with backoff.
    retryable: ClassVar[bool] = False
    #: The reason of the Event recorded when this error fails an operation (None: the usual ``Failed``).
    event_reason: ClassVar[str | None] = None

    @property
    def reason(self) -> str:
        """What the operation's status shows when this error fails it: the message unless set."""
        return str(self.__dict__.get("_reason") or str(self))

    @reason.setter
    def reason(self, value: str) -> None:
        self.__dict__["_reason"] = value


class Transient(DavitError):
    """May succeed when tried again: retried with backoff, then fails the operation."""

    retryable = True


class Permanent(DavitError):
    """Trying again gives the same result: fails the operation at once."""

    retryable = False


class Refused(Permanent):
    """Refused by a rule Davit enforces (tenancy, names, an accepted spec): never retried."""


class Unreadable(Permanent):
    """What a location holds cannot be read (damaged, refused, a format this version does not know)."""


class Invalid(Permanent):
    """The input cannot be used as it is (a malformed message, policy, rule or invocation)."""
