"""The README's main command (``python -m benchmarks.demo``): data resolution, the offline
message, and one short end-to-end run on the real subset."""

from __future__ import annotations

import json
import re
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import demo  # noqa: E402
from benchmarks.cifar_n import cli as cifar_n  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pretend that no data file exists anywhere."""
    monkeypatch.setattr(demo, "find_file", lambda name, data_dir=None: None)
    monkeypatch.setattr(demo, "data_dirs", lambda data_dir=None: [tmp_path])
    return tmp_path


def test_without_data_and_no_download_says_what_to_do(no_data: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--no-download"]) == 2
    err = capsys.readouterr().err
    assert str(no_data) in err, "lists the folders it searched"
    assert "--data-dir" in err and "ROBUSTWEIGHTS_DATA" in err and "cifar-10-python.tar.gz" in err


def test_offline_download_failure_says_what_to_do(no_data: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(demo, "load_dataset", offline)
    assert demo.main([]) == 2, "tries the download by default, then gives up cleanly"
    err = capsys.readouterr().err
    assert "Download failed (URLError" in err and "name resolution" in err
    assert "--data-dir" in err and str(no_data) in err


def test_download_fallback_is_a_valid_benchmark_command(no_data: Path) -> None:
    argv = demo.benchmark_argv(demo.parse_args(["--epochs", "3"]))
    assert argv is not None and "--download" in argv
    preset = cifar_n.build_preset(cifar_n.parse_args(argv))
    assert preset.dataset == "cifar10n"
    assert (preset.limit_train, preset.limit_test) == (5170, 508), "same size as the subset"
    assert preset.train.epochs == 3
    assert preset.methods == ("fbr_plus", "coteaching", "ce_mixup", "ce")
    assert preset.name == "memorise"


def test_with_data_runs_the_memorise_preset_on_worst_labels() -> None:
    if not (SHARED / "cifar10n_subset.npz").is_file():
        pytest.skip("../shared/data (the real CIFAR-10N subset) is absent")
    argv = demo.benchmark_argv(demo.parse_args([]))
    assert argv is not None and "--download" not in argv
    preset = cifar_n.build_preset(cifar_n.parse_args(argv))
    assert preset.dataset == "cifar10n-subset" and preset.noises == ("worst",)
    assert preset.train.epochs == demo.DEMO_EPOCHS and preset.jobs == 2


def test_one_epoch_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (SHARED / "cifar10n_subset.npz").is_file():
        pytest.skip("../shared/data (the real CIFAR-10N subset) is absent")
    before = torch.get_num_threads()
    try:
        assert demo.main(["--epochs", "1", "--out", str(tmp_path), "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert out.startswith("A shortened run: 1 epochs each instead of the benchmark's 80, so CE "
                          "memorises fewer"), out
    assert ("python -m benchmarks.cifar_n --preset memorise --methods fbr_plus coteaching "
            "ce_mixup ce") in out
    verdict = (r"Last epoch: FBR\+ \d+\.\d: FBR\+ (beats|does not beat) CE \(\d+\.\d\), "
               r"(beats|does not beat) CE \+ mixup \(\d+\.\d\), (beats|does not beat) "
               r"Co-teaching \(\d+\.\d\)\. CE fitted \d+% of the wrong labels")
    assert re.search(verdict, out), out
    assert re.search(r"FBR\+'s health report: its filter keeps \d+% of the pool; the network "
                     r"predicts the given label of \d+% of the pool; (not )?collapsed\.", out), out
    for row in ("| CE |", "| Co-teaching |", "| FBR+ (ours) |", "| CE + mixup |",
                "kept precision"):
        assert row in out, row
    recs = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in recs) == ["ce", "ce_mixup", "coteaching", "fbr_plus"]


def test_health_sentence_reads_the_last_epochs_report() -> None:
    extra = [{"health_pool_kept": 0.9}, {"health_pool_kept": 0.527, "health_heldout_kept": 0.74,
                                         "health_pool_agreement": 0.536, "health_collapsed": 1.0}]
    got = demo.health({"curves": {"extra": extra}})
    assert got == (" FBR+'s health report: its filter keeps 53% of the pool, 74% of the held-out "
                   "trusted images; the network predicts the given label of 54% of the pool; "
                   "collapsed.")
    assert demo.health({"curves": {"extra": [{"alpha": 0.0}]}}) == "", "no report, no sentence"
