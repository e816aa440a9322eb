"""benchmarks.cifar_n.report without the weight snapshots: the snapshots (``weights/*.npz``) are
not committed with the records under docs/results, so the plots and the report must work from
the records alone, or with some runs' snapshots. On records and snapshots written here, and on
a run of the benchmark's own command (needs the CIFAR-10N subset)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n import cli as cifar_n  # noqa: E402
from benchmarks.cifar_n.data import find_file  # noqa: E402
from benchmarks.cifar_n.report import load_records, make_plots  # noqa: E402

ALWAYS = ["summary.png", "accuracy_curves.png", "kept_fraction.png"]
POOL = 8


def _record(method: str, seed: int) -> dict[str, Any]:
    """What make_plots reads of a record: two epochs of curves, the accuracies, the phases."""
    return {"key": f"{method}/worst/seed{seed}", "method": method, "noise": "worst",
            "seed": seed, "last_acc": 0.5 + 0.01 * seed, "best_acc": 0.6,
            "phases": {"filtering": 0, "post_filtering": None},
            "curves": {"test_acc": [0.4, 0.5], "kept_frac_clean": [1.0, 0.9],
                       "kept_frac_noisy": [1.0, 0.4]}}


RECORDS = [_record(m, s) for m in ("ce", "fbr", "l2rw") for s in (0, 1)]


def _snapshot(folder: Path, name: str, last: np.ndarray) -> None:
    folder.mkdir(exist_ok=True)
    np.savez_compressed(folder / f"{name}.npz", epochs=np.array([0, 1]),
                        weights=np.stack([np.ones(POOL), last]).astype(np.float32),
                        is_clean=np.arange(POOL) % 2 == 0)


def _names(paths: list[Path]) -> list[str]:
    for p in paths:
        assert p.stat().st_size > 1000, p
    return [p.name for p in paths]


@pytest.mark.parametrize("weights", ["none given", "absent", "empty"])
def test_plots_from_records_only(tmp_path: Path, weights: str) -> None:
    wdir = tmp_path / "weights"
    if weights == "empty":
        wdir.mkdir()
    paths = make_plots(RECORDS, tmp_path, None if weights == "none given" else wdir)
    assert _names(paths) == ALWAYS
    assert not (tmp_path / "weight_histograms.png").exists(), "no empty figure"


def test_histograms_of_the_snapshots_there(tmp_path: Path) -> None:
    wdir = tmp_path / "weights"
    _snapshot(wdir, "fbr__worst__seed0", np.linspace(0.0, 1.0, POOL))  # one run of four
    _snapshot(wdir, "l2rw__worst__seed0", np.full(POOL, np.nan))  # no sample visited
    assert _names(make_plots(RECORDS, tmp_path, wdir)) == [*ALWAYS, "weight_histograms.png"]


def test_no_histograms_when_no_snapshot_has_a_visited_sample(tmp_path: Path) -> None:
    wdir = tmp_path / "weights"
    _snapshot(wdir, "l2rw__worst__seed0", np.full(POOL, np.nan))
    np.savez_compressed(wdir / "fbr__worst__seed0.npz", epochs=np.zeros(0, dtype=np.int64),
                        weights=np.zeros((0, POOL), np.float32), is_clean=np.ones(POOL, bool))
    assert _names(make_plots(RECORDS, tmp_path, wdir)) == ALWAYS


@pytest.mark.skipif(find_file("cifar10n_subset.npz") is None,
                    reason="../shared/data (the real CIFAR-10N subset) is absent")
def test_command_reports_a_folder_of_records_only(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A committed folder as a fresh clone has it: records, no snapshots. ``--resume`` finds
    every run done and rewrites the report and the plots from the records."""
    argv = ["--preset", "smoke", "--methods", "ce", "fbr", "--noise", "worst", "--seeds", "0",
            "--quiet", "--out"]
    run = tmp_path / "run"
    assert cifar_n.main([*argv, str(run)]) == 0
    assert sorted(p.name for p in (run / "weights").iterdir()) == [
        "ce__worst__seed0.npz", "fbr__worst__seed0.npz"]
    assert (run / "weight_histograms.png").is_file()
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(run / "results.jsonl", clone)
    capsys.readouterr()
    assert cifar_n.main([*argv, str(clone), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "0 runs (2 already done)" in out and "| FBR (authors' recipe) |" in out
    assert sorted(p.name for p in clone.glob("*.png")) == sorted(ALWAYS)
    assert len(load_records(clone / "results.jsonl")) == 2
    assert (clone / "results.md").read_text().count("| FBR (authors' recipe) |") >= 1
