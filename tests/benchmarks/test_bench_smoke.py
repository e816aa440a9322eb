"""The CIFAR-N command at smoke size: every method runs end to end on the real subset and
writes what it promises. The only accuracy check: CE learns better than chance on clean labels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n import cli as cifar_n  # noqa: E402
from benchmarks.cifar_n.methods import METHODS  # noqa: E402

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
        assert r["machine"] == cifar_n.machine_description()
        if r["selects"]:
            assert r["final"]["precision"] is not None, f"{r['method']} kept nothing"
        assert (smoke / "weights" / f"{r['method']}__worst__seed0.npz").is_file()
        if r["method"] in ("fbr", "fbr_plus", "l2rw"):
            assert set(r["phases"]) == {"filtering", "post_filtering"}, r["method"]


def test_report_tables_plots_and_reproduce_command(smoke: Path) -> None:
    md = (smoke / "results.md").read_text()
    assert "python -m benchmarks.cifar_n --preset smoke --noise worst" in md
    for row in ("| FBR (authors' recipe) |", "| FBR+ (ours) |", "| L2RW |", "× CE"):
        assert row in md, row
    for png in ("summary.png", "accuracy_curves.png", "kept_fraction.png", "weight_histograms.png"):
        assert (smoke / png).stat().st_size > 1000, png


def test_report_says_when_records_come_from_several_machines(smoke: Path) -> None:
    from benchmarks.cifar_n.report import load_records, markdown_report

    recs = load_records(smoke / "results.jsonl")
    assert "more than one machine" not in markdown_report(recs)
    recs[0] = {**recs[0], "machine": "other CPU"}
    del recs[1]["machine"]
    md = markdown_report(recs)
    assert "more than one machine" in md and "other CPU (1 runs)" in md, md
    assert "1 runs without a recorded machine" in md, md


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
    assert f"0 runs ({len(METHODS)} already done)" in capsys.readouterr().out


def test_paper_preset_code_path_at_smoke_size(tmp_path: Path) -> None:
    """``--preset paper`` (ResNet-34, the authors' FBR recipe and milestones) on a few hundred
    images of the subset, 2 epochs, a thin ResNet: the exact code path a GPU user runs.
    Width 8, not 4: torch 2.13.0's CPU backward of channels-last 4-channel convolutions corrupts
    the heap on some AMD EPYC VMs (``free(): invalid next size``; width 8 and above run)."""
    code = cifar_n.main(["--preset", "paper", "--dataset", "cifar10n-subset", "--device", "cpu",
                         "--limit-train", "300", "--limit-test", "100", "--epochs", "2",
                         "--width", "8", "--methods", "fbr", "ce", "--noise", "worst",
                         "--seeds", "0", "--jobs", "1", "--threads", "1", "--out", str(tmp_path),
                         "--quiet", "--no-plots"])
    assert code == 0
    recs = {r["method"]: r for r in map(json.loads,
                                        (tmp_path / "results.jsonl").read_text().splitlines())}
    assert set(recs) == {"fbr", "ce"}
    spec = recs["fbr"]["spec"]
    assert spec["train"]["arch"] == "resnet34" and spec["train"]["milestones"] == [1, 1, 1]
    # 150 -> 2 epochs: warm-up 10 -> 0, alpha switch 40 -> 1: both FBR phases ran
    assert spec["method_params"] == {"warmup": 0, "clean_passes": 30, "alpha_switch": 1}
    alphas = [e["alpha"] for e in recs["fbr"]["curves"]["extra"]]
    assert alphas[0] > 0 and alphas[1] == 0


def test_the_doubt_gate_ends_at_the_first_lr_drop_of_every_run_length() -> None:
    for argv, end in (([], 40), (["--epochs", "20"], 10)):
        for preset in ("cpu", "memorise"):
            p = cifar_n.build_preset(cifar_n.parse_args(["--preset", preset, *argv]))
            assert p.method_params["fbr_plus"]["dropped_doubt_until"] == end \
                == p.train.milestones[0]


def test_cpu_preset_plans_the_ceiling_runs() -> None:
    preset = cifar_n.build_preset(cifar_n.parse_args(["--preset", "cpu"]))
    keys = [s.key for s in cifar_n.plan_runs(preset)]
    assert len(keys) == len(preset.methods) * 4 * 3 + 3
    assert keys[-3:] == ["ce/clean/seed0", "ce/clean/seed1", "ce/clean/seed2"]
    assert preset.train.augment == "crop_flip" and preset.train.epochs == 80
    no = cifar_n.build_preset(cifar_n.parse_args(["--preset", "cpu", "--no-ceiling"]))
    assert len(cifar_n.plan_runs(no)) == len(keys) - 3
