"""The operation edge: messages and queues, the stage table, progress, scratch state, the worker wrapper."""
