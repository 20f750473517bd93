"""Davit's Grafana dashboard, built as code (``dashboards.davit``); ``python -m dashboards`` (``make
dashboard``) writes it to deploy/monitoring/dashboards/davit.json, which a test keeps in step."""
