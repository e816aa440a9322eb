"""The CIFAR-N command at smoke size: every method runs end to end on the real subset and
writes what it promises. The only accuracy check: CE learns better than chance on clean labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import cifar_n  # noqa: E402
from benchmarks.methods import METHODS  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "cifar10n_subset.npz").is_file(),
                                reason="../shared/data (the real CIFAR-10N subset) is absent")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    code = cifar_n.main(["--preset", "smoke", "--noise", "worst", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_every_method_runs_and_is_recorded(smoke: Path) -> None:
    recs = [json.loads(line) for line in (smoke / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in recs) == sorted(METHODS), "one record per method"
    for r in recs:
        assert len(r["curves"]["test_acc"]) == 2, f"{r['method']}: 2 epochs"
        assert 0.0 <= r["best_acc"] <= 1.0 and r["epoch_time_mean"] > 0
        if r["selects"]:
            assert r["final"]["precision"] is not None, f"{r['method']} kept nothing"
        assert (smoke / "weights" / f"{r['method']}__worst__seed0.npz").is_file()
        if r["method"] in ("fbr", "l2rw"):
            assert set(r["phases"]) == {"filtering", "post_filtering"}, r["method"]


def test_report_tables_plots_and_reproduce_command(smoke: Path) -> None:
    md = (smoke / "results.md").read_text()
    assert "python -m benchmarks.cifar_n --preset smoke --noise worst" in md
    assert "| FBR |" in md and "| L2RW |" in md and "× CE" in md
    for png in ("accuracy_curves.png", "kept_fraction.png", "weight_histograms.png"):
        assert (smoke / png).stat().st_size > 1000, png


def test_ce_learns_better_than_chance_on_clean_labels(tmp_path: Path) -> None:
    code = cifar_n.main(["--preset", "smoke", "--noise", "clean", "--methods", "ce",
                         "--out", str(tmp_path), "--quiet", "--no-plots"])
    assert code == 0
    rec = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    # 10 classes, 200 test images: chance is 10% (sd 2.1%); 15% is 2.4 sd above it.
    assert rec["best_acc"] > 0.15, rec["curves"]["test_acc"]


def test_resume_skips_finished_runs(smoke: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cifar_n.main(["--preset", "smoke", "--noise", "worst", "--out", str(smoke), "--quiet",
                  "--resume", "--no-plots"])
    assert "0 runs (8 already done)" in capsys.readouterr().out
