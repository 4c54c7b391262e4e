"""
Facts the deploy asks the box itself, each a small typed ``FactBase`` with its output documented
(as pyinfra's own ``facts/*.py``).
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from redbox.app import gpu

_EXIT = "red-gpu-exit="
# Each nvidia-smi call is bounded: a hung driver cannot hang a converge.
GPU_TIMEOUT = 10


class GpuReport(FactBase):
    """
    Returns ``(gpu, problem)`` for the box's first NVIDIA GPU, as ``redbox.app.gpu`` reads
    nvidia-smi on the box: a ``Gpu`` (name, compute capability, driver, the CUDA the driver
    runs, the count) and ``""``, or ``None`` and why not (no nvidia-smi, a driver that does not
    answer, output it cannot read).
    """

    @staticmethod
    def default() -> tuple[gpu.Gpu | None, str]:
        # No output at all (pyinfra skips process()): no nvidia-smi answered.
        return gpu.parse_gpus(None, "", "")

    def command(self) -> str:
        query = shlex.join(gpu.QUERY)
        return (f"if command -v nvidia-smi >/dev/null 2>&1; then "
                f"timeout {GPU_TIMEOUT} {query} 2>&1; echo \"{_EXIT}$?\"; "
                f"timeout {GPU_TIMEOUT} nvidia-smi 2>/dev/null | head -n 5; "
                f"else echo '{_EXIT}missing'; fi")

    def process(self, output) -> tuple[gpu.Gpu | None, str]:
        lines = list(output)
        marks = [index for index, line in enumerate(lines) if line.startswith(_EXIT)]
        if not marks:
            return gpu.parse_gpus(None, "", "")
        query, code, header = lines[:marks[0]], lines[marks[0]][len(_EXIT):], lines[marks[0] + 1:]
        if code == "missing":
            return gpu.parse_gpus(None, "", "")
        if code == "124":
            return gpu.parse_gpus(None, f"nvidia-smi did not answer within {GPU_TIMEOUT} s "
                                  "(a hung driver?)", "")
        return gpu.parse_gpus(int(code) if code.isdigit() else 1, "\n".join(query),
                              "\n".join(header))
