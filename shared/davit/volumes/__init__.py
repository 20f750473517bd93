"""Volume data: which claims a backup covers, the backup and restore Volumes stages, the node agent's
directories."""
