"""The fault-injection suite (`make chaos`, docs/chaos.md)."""
