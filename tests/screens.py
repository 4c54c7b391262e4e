"""
What the browser and VNC tests share: how Chromium runs here, and how a capture of the desktop
is judged painted (not black).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
# The desktop paints its background some seconds after Xvnc answers (longer on a busy box).
PAINT_TIMEOUT = 60


def lit_fraction(path: Path) -> float:
    """Share of pixels that are not black."""
    image = Image.open(path).convert("L")
    histogram = image.histogram()
    return sum(histogram[16:]) / sum(histogram)
