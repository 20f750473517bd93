"""What a backup selects: resource selection, exec rules, and the schedules that create backups."""
