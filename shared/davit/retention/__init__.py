"""What retention decides: schedule retention rules, ttl expiry, location sync, deletion counters."""
