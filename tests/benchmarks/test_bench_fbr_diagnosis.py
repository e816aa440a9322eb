"""benchmarks.fbr_diagnosis on a hand-made results file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import fbr_diagnosis  # noqa: E402


def _record(method: str, recall: list[float], acc: list[float], switch: int) -> dict:
    return {"key": f"{method}/worst/seed0", "method": method, "noise": "worst", "seed": 0,
            "last_acc": acc[-1],
            "final": {"recall": recall[-1], "precision": 0.8},
            "spec": {"method_params": {"warmup": 1, "alpha_switch": switch}},
            "curves": {"recall": recall, "test_acc": acc}}


def test_gap_counts_only_epochs_from_the_switch(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    fbr = _record("fbr", [1.0, 1.0, 0.5, 0.6], [0.3, 0.4, 0.4, 0.4], switch=2)
    ce = _record("ce", [1.0] * 4, [0.5] * 4, switch=0)
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in (fbr, ce)))
    (_label, rec), = fbr_diagnosis.fbr_runs([str(tmp_path)], "worst")
    mean_gap, max_gap = fbr_diagnosis.switch_gap(rec)
    assert mean_gap == pytest.approx(15.0) and max_gap == pytest.approx(20.0)
    out = tmp_path / "fig.png"
    assert fbr_diagnosis.main([str(tmp_path), "--out", str(out)]) == 0
    assert "+15.0" in capsys.readouterr().out and out.stat().st_size > 1000
    with pytest.raises(SystemExit, match="no FBR runs"):
        fbr_diagnosis.main([str(tmp_path), "--noise", "aggre"])
