"""The bench's table: each goal of issue 11 beside its figure, met or not."""

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import bench  # bench/bench.py, found by the path above


def test_a_goal_says_whether_the_figure_met_it():
    assert bench.goal(1.15, 1.2) == "<= 1.2x: met"
    assert bench.goal(1.2, 1.2) == "<= 1.2x: met"
    assert bench.goal(1.21, 1.2) == "<= 1.2x: NOT met"
    assert bench.goal(2.04, 1.0, "s") == "<= 1 s: NOT met"
    assert bench.goal(2.4, 2.5, "s") == "<= 2.5 s: met"


def test_the_table_pads_rows_without_a_goal(capsys):
    bench.print_table([("boot", "9.5 s", "8.3 s", "1.14x", bench.goal(1.14, 1.2)),
                       ("inventory load", "97 ms", "", "")])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert all(line.count("|") == 6 for line in lines)
    assert lines[2].split("|")[5].strip() == "<= 1.2x: met"
