"""benchmarks.cifar_n.studies.cost_accuracy on hand-made records: accuracy over seeds, cost over the
same runs' CE (or the fallback CE), candidate selection, the errors, the table and the plot."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n.studies.cost_accuracy import main, measure, parse_spec, table  # noqa: E402


def _write(folder: Path, rows: list[tuple[str, str | None, int, float, float]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "results.jsonl", "w") as f:
        for method, cand, seed, acc, cpu in rows:
            f.write(json.dumps({"key": f"{method}/worst/{seed}", "method": method,
                                "candidate": cand, "seed": seed,
                                "noise": "worst", "last_acc": acc,
                                "epoch_cpu_time_mean": cpu}) + "\n")
            # a record on another label set, which must be ignored
            f.write(json.dumps({"key": f"{method}/aggre/{seed}", "method": method,
                                "candidate": cand, "seed": seed,
                                "noise": "aggre", "last_acc": 0.0,
                                "epoch_cpu_time_mean": 100.0}) + "\n")
    return folder


def test_accuracy_and_cost_against_the_same_runs_ce(tmp_path: Path) -> None:
    runs = _write(tmp_path / "a", [("ce", None, 1, 0.50, 2.0), ("ce", None, 0, 0.60, 2.0),
                                   ("fbr", "x: y", 0, 0.56, 3.0), ("fbr", "x: y", 1, 0.60, 2.0),
                                   ("fbr", "z", 0, 0.10, 9.0)])
    p = measure(f"FBR={runs}:fbr:x: y")
    assert p.seeds == (0, 1) and p.accs == pytest.approx((56.0, 60.0))
    assert p.mean == pytest.approx(58.0) and p.std == pytest.approx(math.sqrt(8.0))
    assert p.cost == pytest.approx(1.25) and p.ce_source == "same runs"
    ce = measure(f"CE={runs}:ce")
    assert ce.cost == pytest.approx(1.0) and ce.mean == pytest.approx(55.0)
    assert "| FBR | 58.0 ± 2.8 | 0, 1 | 1.25x | same runs |" in table([p])


def test_fallback_ce_and_errors(tmp_path: Path) -> None:
    ce_runs = _write(tmp_path / "ce", [("ce", None, 0, 0.5, 4.0)])
    other = _write(tmp_path / "b", [("fbr", None, 0, 0.5, 2.0)])
    p = measure(f"F={other}:fbr", ce_fallback=ce_runs)
    assert p.cost == pytest.approx(0.5) and p.ce_source == f"CE of {ce_runs}"
    assert math.isnan(p.std)
    with pytest.raises(ValueError, match="No CE records"):
        measure(f"F={other}:fbr")
    with pytest.raises(ValueError, match="No worst-label records"):
        measure(f"F={other}:l2rw")
    with pytest.raises(ValueError, match="LABEL=FOLDER"):
        parse_spec("no-label")


def test_cli_writes_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _write(tmp_path / "a", [("ce", None, 0, 0.5, 2.0), ("fbr", None, 0, 0.6, 3.0)])
    out = tmp_path / "plot.png"
    assert main([f"CE={runs}:ce", f"FBR={runs}:fbr", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert "| FBR | 60.0 ± nan | 0 | 1.50x | same runs |" in capsys.readouterr().out
