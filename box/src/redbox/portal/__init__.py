"""The front door (door) and the status writer (status)."""
