"""Davit: backup, restore and clone for Kubernetes applications.

This package is the library every Davit service uses: API types, messages, queue configuration,
Kubernetes helpers and logging. Services live in ``davit_services``.
"""

__version__ = "0.1.0"
