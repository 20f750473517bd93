"""Kubernetes helpers: client construction, list-and-watch, Events. The only place that touches the
Kubernetes client library's configuration."""
