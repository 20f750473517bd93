"""Object names as label values.

Object names may be 253 characters long, label values only 63. A name that goes into a label (the
schedule of a scheduled backup, the backup of a snapshot) passes through ``label_value`` both where the
label is written and where it is selected on, so one long name cannot make a create fail (and with it a
whole loop of work for other users) and both sides always agree on the value.
"""

from __future__ import annotations

import hashlib
from typing import Final

#: Kubernetes' limit on a label value.
MAX_LABEL_VALUE: Final = 63
#: Hex digits of the hash that ends a shortened value: 40 bits, so two long names sharing their first
#: 52 characters still get different values.
_HASH_DIGITS: Final = 10


def label_value(name: str) -> str:
    """``name`` unchanged when it fits a label value, else its front and a hash of the whole name.

    The result is a valid label value for any object name (a DNS-1123 subdomain): at most 63 characters,
    alphanumeric at both ends. A name of 63 characters or fewer is kept as it is, so short names read the
    same in labels as everywhere else.
    """
    if len(name) <= MAX_LABEL_VALUE:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_DIGITS]
    # The cut may leave a "-" or "." at the end, which a label value may not have before the "-" we add.
    head = name[: MAX_LABEL_VALUE - _HASH_DIGITS - 1].rstrip("-._")
    return f"{head}-{digest}"


def selector(key: str, name: str) -> str:
    """The equality selector ``key=<label_value(name)>`` that finds what was labelled with ``name``."""
    return f"{key}={label_value(name)}"
