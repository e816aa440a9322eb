"""benchmarks.cifar_n.studies.fit_memorisation: the plane through records made on a known plane
is that plane, filters and the accuracy floor are applied, and the map is drawn."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n.studies.fit_memorisation import fit_plane, load_points, main  # noqa: E402


def _record(noise: str, seed: int, fit: float, mem: float | None, acc: float,
            augment: str = "flip", method: str = "fbr_plus") -> dict[str, object]:
    memorisation = None if mem is None else {"fit_clean": fit / 100, "memorised": mem / 100}
    return {"key": f"{method}/{noise}/seed{seed}", "method": method, "noise": noise,
            "seed": seed, "last_acc": acc / 100,
            "memorisation": memorisation, "spec": {"train": {"augment": augment}}}


def _write(folder: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):  # on the plane acc = 20 + 0.6 fit - 0.5 mem, exactly
        fit, mem = float(rng.uniform(50, 95)), float(rng.uniform(10, 60))
        rows.append(_record("worst", i, fit, mem, 20 + 0.6 * fit - 0.5 * mem))
    rows.append(_record("worst", 99, 12.0, 7.0, 12.0))  # a collapsed run, under --min-acc
    rows.append(_record("worst", 98, 80.0, None, 50.0))  # no diagnosis: not a point
    rows.append(_record("worst", 97, 80.0, 30.0, 90.0, augment="crop_flip"))  # other preset
    (folder / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:7]) + "\n")
    sub = folder / "run"
    sub.mkdir()
    (sub / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows[7:]) + "\n\n")


def test_the_plane_of_records_on_a_plane(tmp_path: Path) -> None:
    _write(tmp_path)
    points = load_points(tmp_path, augment="flip")
    assert len(points) == 13 and {p["file"] for p in points} == {"a.jsonl", "results.jsonl"}
    assert len(load_points(tmp_path)) == 14  # the crop_flip run too
    plane = fit_plane(points, min_acc=30.0)
    assert plane.n == 12
    assert plane.intercept == pytest.approx(20.0, abs=1e-6)
    assert plane.fit == pytest.approx(0.6, abs=1e-8)
    assert plane.memorised == pytest.approx(-0.5, abs=1e-8)
    assert plane.r2 == pytest.approx(1.0) and plane.resid_sd == pytest.approx(0.0, abs=1e-6)
    assert fit_plane(points, min_acc=0.0).r2 < 1.0  # the collapsed run is off the plane
    with pytest.raises(ValueError, match="at least 4 runs"):
        fit_plane(points[:3])


def test_main_prints_the_plane_and_draws_the_map(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path)
    main([str(tmp_path), "--noise", "worst", "--out", str(tmp_path / "out"),
          "--mark", "a.jsonl:fbr_plus=ours"])
    out = capsys.readouterr().out
    assert "worst: accuracy = 20.0 + 0.600 x fit -0.500 x memorised" in out
    assert "worth 1.20 points of memorisation" in out
    assert (tmp_path / "out" / "fit_memorisation.png").stat().st_size > 10_000
