"""benchmarks.cifar_n.studies.filter_health: the collapse epochs on hand-made records, and the
report and figure of a smoke-size FBR run with a held-out trusted split and per-epoch
diagnostics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n import cli as cifar_n  # noqa: E402
from benchmarks.cifar_n.studies.filter_health import collapse_epochs, main  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _record(kept_noisy: list[float], memorised: list[float], warmup: list[int],
            collapsed: list[float | None]) -> dict[str, object]:
    return {"curves": {"kept_frac_noisy": kept_noisy, "test_acc": [0.5] * len(kept_noisy),
                       "extra": [{"warmup": w, "health_collapsed": c}
                                 for w, c in zip(warmup, collapsed, strict=True)]},
            "diagnostics": [{"epoch": e, "memorised": m} for e, m in enumerate(memorised)]}


def test_collapse_epochs_by_true_labels_and_by_the_signal() -> None:
    # wrong labels kept and memorised, both >= 0.5 first at epoch 3 (epoch 0 is warm-up)
    rec = _record([0.9, 0.6, 0.4, 0.55, 0.7], [0.6, 0.3, 0.6, 0.5, 0.6], [1, 0, 0, 0, 0],
                  [None, 0.0, 0.0, 1.0, 1.0])
    assert collapse_epochs(rec) == (3, 3)
    assert collapse_epochs(rec, share=0.3) == (1, 3)
    never = _record([0.2, 0.2], [0.9, 0.9], [0, 0], [0.0, None])  # memorised, not kept
    assert collapse_epochs(never) == (None, None)


@pytest.mark.skipif(not (SHARED / "cifar10n_subset.npz").is_file(),
                    reason="../shared/data (the real CIFAR-10N subset) is absent")
def test_report_and_figure_of_a_smoke_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    out = tmp_path / "run"
    assert cifar_n.main(["--preset", "smoke", "--methods", "fbr", "--out", str(out), "--quiet",
                         "--no-plots", "--diag-every", "1", "--set",
                         "fbr.health_holdout=20"]) == 0
    capsys.readouterr()
    fig = tmp_path / "health.png"
    assert main([str(out), "--out", str(fig)]) == 0
    text = capsys.readouterr().out
    assert "| run: fbr/worst/seed0 |" in text and fig.stat().st_size > 10_000
