"""Red's deploy, one module per concern; ``deploy.py`` orders them."""
