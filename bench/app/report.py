"""The bench's figures from its runs: medians, the steps, the link's use, bytes, the last line."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable

# Issue 23's goals.
GOALS = {"Red/floor": 1.3, "Red/plain": 0.45, "recreated/first": 0.15}
# Servers whose files must come once per flow (git's and the pages' answers may repeat).
FILE_SERVERS = ("pypi", "pytorch-cu124", "nvidia", "cdn", "clip")
_UV_LINE = re.compile(r"^(Resolved|Prepared|Installed|Uninstalled|Audited) (\d+) packages? in "
                      r"(.+?)\s*$")
_UV_TIME = re.compile(r"(?:(\d+)m\s*)?(?:([\d.]+)(ms|s))?")


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def last_line(red: float, plain: float, floor: float, recreated: float) -> str:
    """The bench's last line (issue 23's words)."""
    return (f"app ready: Red {red:.1f} s, plain {plain:.1f} s, floor {floor:.1f} s, "
            f"Red/floor {red / floor:.2f}, Red/plain {red / plain:.2f}, "
            f"recreated/first {recreated / red:.2f}")


def goals(red: float, plain: float, floor: float, recreated: float) -> list[str]:
    figures = {"Red/floor": red / floor, "Red/plain": red / plain,
               "recreated/first": recreated / red}
    return [f"{name} {value:.2f} (goal <= {GOALS[name]}): "
            f"{'met' if value <= GOALS[name] else 'NOT met'}" for name, value in figures.items()]


def uv_seconds(text: str) -> float | None:
    """uv's duration ("834ms", "1.58s", "1m 02s") in seconds."""
    match = _UV_TIME.fullmatch(text.strip())
    if not match or not (match[1] or match[2]):
        return None
    seconds = float(match[1] or 0) * 60
    if match[2]:
        seconds += float(match[2]) / (1000 if match[3] == "ms" else 1)
    return seconds


def uv_phases(log: str) -> dict[str, tuple[int, float]]:
    """uv's summary lines in red-app-pip's output: phase -> (packages, seconds)."""
    found = {}
    for line in log.splitlines():
        match = _UV_LINE.match(line.strip())
        if match and (seconds := uv_seconds(match[3])) is not None:
            found[match[1].lower()] = (int(match[2]), seconds)
    return found


def tool_json(log: str, key: str) -> dict | None:
    """The last JSON object line of a tool's output that has key."""
    for line in reversed(log.splitlines()):
        line = line.strip()  # noqa: PLW2901 - the stripped line
        if line.startswith("{") and key in line:
            try:
                found = json.loads(line)
            except ValueError:
                continue
            if isinstance(found, dict) and key in found:
                return found
    return None


def duplicates(servers: dict) -> list[str]:
    """Files a flow fetched more than once (more body bytes than the file has)."""
    found = []
    for name in FILE_SERVERS:
        for path, (count, body, size) in sorted(servers.get(name, {}).get("files", {}).items()):
            if body > size:
                found.append(f"{name}{path}: {count} answers, {body} bytes of {size}")
    return found


def low_spans(samples: list[int], sample_s: float, rate: float, below: float = 0.5,
              shortest: float = 1.0) -> list[tuple[float, float]]:
    """(start, end) seconds of the spans of at least ``shortest`` s the link ran below
    ``below`` of its rate."""
    spans, start = [], None
    for index, count in enumerate([*samples, rate * sample_s]):
        low = count < below * rate * sample_s and index < len(samples)
        if low and start is None:
            start = index
        elif not low and start is not None:
            if (index - start) * sample_s >= shortest:
                spans.append((start * sample_s, index * sample_s))
            start = None
    return spans


def link_use(samples: list[int], sample_s: float, rate: float, seconds: float) -> dict:
    """How much of the link a flow used: on average, and where it ran below half."""
    total = sum(samples)
    return {"average": total / max(1e-9, rate * seconds),
            "busy": sum(1 for count in samples if count >= 0.8 * rate * sample_s)
            * sample_s / max(1e-9, seconds),
            "low": low_spans(samples, sample_s, rate)}


def running_at(steps: list[dict], start: float, end: float) -> list[str]:
    """The steps running during a span."""
    return [step["label"] for step in steps
            if step["start"] < end and step.get("end", end) > start]


def label_steps(steps: list[dict]) -> list[dict]:
    """Steps named as the report shows them: models (background) apart from models."""
    return [{**step, "label": step["name"] + (" (background)" if step.get("background") else "")}
            for step in steps]


def table(rows: list[list[str]], head: list[str]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    line = ["  ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                      for i, cell in enumerate(head))]
    return line + ["  ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                             for i, cell in enumerate(row)) for row in rows]


def mb(count: float) -> str:
    return f"{count / 1e6:.1f}"
