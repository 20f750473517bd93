"""The retention service (queue ``davit.retention``): deletes backups according to their reclaimPolicy,
applies schedules' retention and ad-hoc backups' TTLs, syncs locations' backups into the cluster, and
collects the repository's garbage."""
