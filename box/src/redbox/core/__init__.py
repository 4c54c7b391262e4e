"""Small primitives every tool shares: log lines, state files, locks, retries, processes."""
