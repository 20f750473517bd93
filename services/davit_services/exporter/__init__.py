"""The exporter: Prometheus metrics on ``/metrics``, computed at scrape time from the custom resources
(followed with list-and-watch into an in-memory cache) and from the Davit queues' lengths in Redis.
Any number of replicas may run; each reports the same numbers. See docs/observability.md."""
