"""The local stack for development and tests (SPEC §8): a real control plane, stores and Davit services.

Everything runs as plain processes on loopback, started by ``python -m devstack up`` (``make up``) and
stopped by the process ids recorded under the state directory (``make down``).
"""
