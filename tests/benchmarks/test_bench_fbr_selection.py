"""benchmarks.cifar_n.studies.fbr_selection: the stage table and its winner from recorded runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n.studies.fbr_selection import STAGES, stage_table  # noqa: E402


def _write(folder: Path, accs: list[float]) -> None:
    folder.mkdir(parents=True)
    with open(folder / "results.jsonl", "w") as f:
        for seed, a in zip((10, 11, 12), accs, strict=False):
            f.write(json.dumps({"key": f"fbr/worst/seed{seed}", "noise": "worst",
                                "last_acc": a}) + "\n")


def test_winner_is_the_best_mean_last_epoch_and_waits_for_every_seed(tmp_path: Path) -> None:
    stage, candidates = STAGES[0]
    accs = {"authors": [0.50, 0.52, 0.51], "strict": [0.53, 0.52, 0.54],
            "rate": [0.55, 0.56, 0.54], "rate_cb": [0.56, 0.53]}  # rate_cb: a seed missing
    for name, a in accs.items():
        _write(tmp_path / f"{stage}_{name}", a)
    table, winner, _ = stage_table(tmp_path, stage, candidates, ())
    assert winner is None and "2/3" in table
    with open(tmp_path / f"{stage}_rate_cb" / "results.jsonl", "a") as f:
        f.write(json.dumps({"key": "fbr/worst/seed12", "noise": "worst", "last_acc": 0.5}) + "\n")
    table, winner, folder = stage_table(tmp_path, stage, candidates, ())
    rate = next(c for c in candidates if c.name == "rate")
    assert winner == rate.sets and "Winner: `rate`" in table and "55.0 ± 1.0" in table
    assert folder == tmp_path / f"{stage}_rate"
    stage2, candidates2 = STAGES[1]  # its `self` candidate is the stage-1 winner's runs
    table2, winner2, _ = stage_table(tmp_path, stage2, candidates2, winner, folder)
    assert winner2 is None and "55.0 ± 1.0 | 3/3" in table2 and "0/3" in table2
