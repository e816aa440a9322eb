"""benchmarks.cifar_n.studies.kept_by_class: per-class kept statistics on hand-checkable arrays,
on a results folder written here (records and weight snapshots, with and without snapshots) and
on a run of the benchmark's own command (needs the CIFAR-10N subset). The snapshots under
docs/results are not committed: no test reads them."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n import cli as cifar_n  # noqa: E402
from benchmarks.cifar_n import data as cifar_data  # noqa: E402
from benchmarks.cifar_n.data import find_file  # noqa: E402
from benchmarks.cifar_n.presets import PRESETS  # noqa: E402
from benchmarks.cifar_n.studies import kept_by_class  # noqa: E402


def test_class_stats_by_hand() -> None:
    true = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array([0, 0, 1, 1, 1, 0])  # samples 2 and 5 are wrong
    weights = np.array([1.0, 0.0, 1.0, 1.0, np.nan, 0.0])  # NaN: never visited, not kept
    s = kept_by_class.class_stats(weights, labels, true, num_classes=2)
    # correct samples of true class 0: #0 (kept), #1 (dropped); of class 1: #3 (kept), #4 (NaN)
    np.testing.assert_allclose(s["recall"], [0.5, 0.5])
    # kept with label 0: #0 (correct); kept with label 1: #2 (wrong), #3 (correct)
    np.testing.assert_allclose(s["precision"], [1.0, 0.5])
    np.testing.assert_allclose(s["kept_share"], [1 / 3, 2 / 3])
    np.testing.assert_allclose(s["pool_share"], [0.5, 0.5])


def test_floor_counts_only_weights_above_it() -> None:
    true = labels = np.array([0, 1, 2])
    weights = np.array([0.3, 0.31, 1.0])
    s = kept_by_class.class_stats(weights, labels, true, num_classes=4, floor=0.3)
    np.testing.assert_allclose(s["recall"][:3], [0.0, 1.0, 1.0])
    assert np.isnan(s["recall"][3]) and np.isnan(s["precision"][0])


def test_floor_of_reads_the_method_default_and_overrides() -> None:
    rec = {"method": "fbr_plus", "spec": {"method_params": {}}}
    assert kept_by_class.floor_of(rec) == 0.5
    rec["spec"]["method_params"] = {"dropped_weight": 0.1}
    assert kept_by_class.floor_of(rec) == 0.1
    assert kept_by_class.floor_of({"method": "fbr", "spec": {"method_params": {}}}) == 0.0
    # A record that names the parameters it ran with keeps its floor when the default moves.
    rec = {"method": "fbr_plus", "spec": {"method_params": {}}, "params": {"dropped_weight": 0.3}}
    assert kept_by_class.floor_of(rec) == 0.3


# A pool of six images, two classes; samples 2 and 5 have a wrong label.
TRUE = np.array([0, 0, 0, 1, 1, 1])
LABELS = np.array([0, 0, 1, 1, 1, 0])


def _record(method: str, seed: int) -> dict[str, Any]:
    return {"key": f"{method}/worst/seed{seed}", "method": method, "noise": "worst",
            "seed": seed, "spec": {"dataset": "synthetic", "method_params": {}}}


def _folder(root: Path, records: list[dict[str, Any]],
            snapshots: dict[str, np.ndarray]) -> Path:
    """A results folder as the command writes it: results.jsonl and weights/<name>.npz with two
    epochs of snapshots (the first all zero: only the last counts)."""
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if snapshots:
        (root / "weights").mkdir()
    for name, last in snapshots.items():
        np.savez_compressed(root / "weights" / f"{name}.npz", epochs=np.array([0, 1]),
                            weights=np.stack([np.zeros_like(last), last]).astype(np.float32),
                            is_clean=LABELS == TRUE)
    return root


@pytest.fixture
def synthetic_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs' labels without the dataset: every record gets the six-image pool above."""
    monkeypatch.setattr(kept_by_class, "_labels_of", lambda record, cache: (LABELS, TRUE, 2))


def test_table_from_written_snapshots(tmp_path: Path, synthetic_labels: None,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    records = [_record("fbr", 0), _record("fbr", 1), _record("l2rw", 0), _record("ce", 0)]
    _folder(tmp_path, records, {
        "fbr__worst__seed0": np.array([1.0, 0.0, 1.0, 1.0, np.nan, 0.0]),  # as by hand above
        "fbr__worst__seed1": np.array([1.0, 1.0, 0.0, 1.0, 1.0, 0.0]),  # exactly the right ones
        "ce__worst__seed0": np.ones(6)})  # l2rw has no snapshot
    assert kept_by_class.main([str(tmp_path), "--noise", "worst"]) == 0
    out = capsys.readouterr().out
    assert "| method | 0 | 1 | min / max |" in out
    # seed 0: recall (0.5, 0.5), precision (1, 0.5), share (1/3, 2/3); seed 1: all 1 and 1/2
    assert "| FBR (authors' recipe) (2) | 75 | 75 | 75 / 75 |" in out  # recall
    assert "| FBR (authors' recipe) (2) | 100 | 75 | 75 / 100 |" in out  # precision
    assert "| FBR (authors' recipe) (2) | 42 | 58 | 42 / 58 |" in out  # share of the kept set
    assert "| *the pool* | 50 | 50 | 50 / 50 |" in out
    assert "1 recorded runs have no weight snapshot and are left out." in out
    assert "| L2RW" not in out and "| CE" not in out  # no snapshot; CE keeps every sample


def test_table_without_snapshots_says_how_to_write_them(
        tmp_path: Path, synthetic_labels: None) -> None:
    _folder(tmp_path, [_record("fbr", 0), _record("l2rw", 0)], {})  # a folder of records only
    text = kept_by_class.table(tmp_path, "worst")
    assert text.startswith("No weight snapshots of filtering methods for noise 'worst'"), text
    assert "(2 runs recorded)" in text and "without --resume" in text


def test_table_refuses_snapshots_of_other_labels(tmp_path: Path,
                                                 synthetic_labels: None) -> None:
    _folder(tmp_path, [_record("fbr", 0)], {"fbr__worst__seed0": np.ones(6)})
    with np.load(tmp_path / "weights" / "fbr__worst__seed0.npz") as z:
        arrays = dict(z)
    arrays["is_clean"] = ~arrays["is_clean"]  # another run's labels
    np.savez(tmp_path / "weights" / "fbr__worst__seed0.npz", **arrays)
    with pytest.raises(ValueError, match="do not match the run's snapshot"):
        kept_by_class.table(tmp_path, "worst")


@pytest.mark.skipif(find_file("cifar10n_subset.npz") is None,
                    reason="../shared/data (the real CIFAR-10N subset) is absent")
def test_table_of_a_run_of_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    # The runner's snapshot must match the labels rebuilt from its record (else it raises).
    assert cifar_n.main(["--preset", "smoke", "--methods", "fbr", "--noise", "worst", "--seeds",
                         "0", "--out", str(tmp_path), "--quiet", "--no-plots"]) == 0
    capsys.readouterr()
    smoke = PRESETS["smoke"]  # the record does not hold the smoke run's image limits
    monkeypatch.setattr(cifar_data, "load_dataset", functools.partial(
        cifar_data.load_dataset, limit_train=smoke.limit_train, limit_test=smoke.limit_test))
    assert kept_by_class.main([str(tmp_path), "--noise", "worst"]) == 0
    out = capsys.readouterr().out
    assert "| FBR (authors' recipe) (1) |" in out and "| *the pool* |" in out
    assert "| method | plane | car |" in out and "no weight snapshot" not in out
