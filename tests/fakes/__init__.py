"""In-memory stand-ins for what the services talk to, for unit tests."""
