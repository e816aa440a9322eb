"""benchmarks.cifar_n.studies.kept_by_class: per-class kept statistics on hand-checkable arrays and
on the committed table's snapshots (needs the CIFAR-10N subset)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n.data import find_file  # noqa: E402
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
    assert kept_by_class.floor_of(rec) == 0.3
    rec["spec"]["method_params"] = {"dropped_weight": 0.1}
    assert kept_by_class.floor_of(rec) == 0.1
    assert kept_by_class.floor_of({"method": "fbr", "spec": {"method_params": {}}}) == 0.0


@pytest.mark.skipif(find_file("cifar10n_subset.npz") is None,
                    reason="../shared/data (the real CIFAR-10N subset) is absent")
def test_committed_table(capsys: pytest.CaptureFixture[str]) -> None:
    # The rebuilt labels must match every snapshot's is_clean mask (else it raises).
    assert kept_by_class.main([str(ROOT / "docs/results/cifar_n_cpu"), "--noise", "worst",
                               "--methods", "fbr"]) == 0
    out = capsys.readouterr().out
    assert "| FBR (authors' recipe) (3) |" in out and "| *the pool* |" in out
    assert "| method | plane | car |" in out
    assert "| CE" not in out and "FINE" not in out  # CE keeps all; FINE was not asked for
