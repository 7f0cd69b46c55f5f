"""`part-cli frontier`: points from metrics files (here) and from real `dvc exp show --json`
output (tests/test_pipeline.py), each accuracy with its n and a 95% interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from part.cli import app
from part.evaluation.frontier import (
    FrontierError,
    frontier_table,
    points_from_experiments,
    points_from_files,
)


def _metrics(path: Path, variant: str, eps_low: float, seed: int, natural: int, pgd: int,
             n: int = 200) -> Path:
    content = {"natural": natural / n, "n_natural": n, "pgd20": pgd / n, "n_pgd20": n,
               "eps": 8 / 255, "train_eps": 8 / 255, "eps_low": eps_low, "variant": variant,
               "train_seed": seed, "method": "part-at" if variant == "part" else "at"}
    path.write_text(json.dumps(content))
    return path


def test_one_point_per_variant_and_budget_with_wilson_intervals_and_n(tmp_path):
    files = [_metrics(tmp_path / "part-6.json", "part", 6 / 255, 0, 150, 60),
             _metrics(tmp_path / "part-7.json", "part", 7 / 255, 0, 148, 64),
             _metrics(tmp_path / "baseline.json", "baseline", 8 / 255, 0, 140, 66)]
    points = points_from_files(files)
    assert [(p.variant, round(p.eps_low * 255)) for p in points] == \
        [("baseline", 8), ("part", 6), ("part", 7)]
    natural = points[1].accuracy["natural"]
    reference = binomtest(150, 200).proportion_ci(method="wilson")
    assert (natural.n, natural.mean) == (200, 0.75)
    assert (natural.low, natural.high) == pytest.approx((reference.low, reference.high))


def test_seeds_of_one_setting_are_averaged_with_a_t_interval(tmp_path):
    from scipy.stats import t

    files = [_metrics(tmp_path / f"part-{seed}.json", "part", 6 / 255, seed, natural, 60)
             for seed, natural in ((0, 150), (1, 146), (2, 152))]
    (found,) = points_from_files(files)
    values = [150 / 200, 146 / 200, 152 / 200]
    mean = sum(values) / 3
    std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
    low, high = t.interval(0.95, 2, loc=mean, scale=std / 3 ** 0.5)
    assert found.seeds == (0, 1, 2)
    assert (found.accuracy["natural"].low, found.accuracy["natural"].high) == \
        pytest.approx((low, high))
    # Every seed gave 60 of 200 under PGD-20: no spread, so no interval, never a zero-width one.
    agreed = found.accuracy["pgd20"]
    assert agreed.mean == pytest.approx(0.3) and agreed.low is None and agreed.high is None
    assert "30.00 [seeds agree]" in frontier_table([found])


def test_the_command_writes_the_plot_and_a_table_with_every_n(tmp_path):
    # 0 of 200 under PGD-20: a Wilson bound a rounding error from 0 must still plot.
    files = [_metrics(tmp_path / "part-6.json", "part", 6 / 255, 0, 150, 0),
             _metrics(tmp_path / "baseline.json", "baseline", 8 / 255, 0, 140, 66)]
    plot, table = tmp_path / "out" / "frontier.png", tmp_path / "out" / "frontier.md"
    result = CliRunner().invoke(app, ["frontier", *map(str, files), "--plot", str(plot),
                                      "--table", str(table)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 2 and all(row.endswith("| 200 / 200 / - |") for row in rows)
    assert "| part | 8/255 | 6/255 |" in rows[1] and "75.00 [" in rows[1]


def test_bad_inputs_name_the_problem_and_the_fix(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FrontierError, match="not a readable metrics file"):
        points_from_files([bad])
    result = CliRunner().invoke(app, ["frontier", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert points_from_experiments([{"rev": "workspace", "data": {"params": {}}}]) == []
    saved = tmp_path / "exp.json"
    saved.write_text("[]")
    result = CliRunner().invoke(app, ["frontier", "--exp-json", str(saved), "--plot",
                                      str(tmp_path / "f.png"), "--table", str(tmp_path / "f.md")])
    assert result.exit_code == 2 and "run the sweep first" in result.output
    assert not (tmp_path / "f.png").exists()
