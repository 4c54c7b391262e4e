"""The app: its checkout, its packages, its models and weights, and when its program may start."""
