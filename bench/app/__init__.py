"""make bench-app: the app's first boot on a simulated network (see __main__.py)."""
