"""The watcher: follows Davit's custom resources, validates new operations, advances the stage machine
by enqueueing exactly one message for the next service, and re-enqueues work whose message was lost.
One active instance at a time, elected through a coordination.k8s.io Lease."""
