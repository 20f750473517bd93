"""The retention service (queue ``davit.retention``): deletes backups according to their reclaimPolicy.
Schedule retention, TTLs, garbage collection and location sync join it next."""
