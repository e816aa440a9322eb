"""benchmarks.cifar_n.studies.collapse_probe: one epoch of the probe on the real subset prints
one line per epoch whose class counts cover the scored pool images."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n.studies.collapse_probe import main  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "cifar10n_subset.npz").is_file(),
                    reason="../shared/data (the real CIFAR-10N subset) is absent")
def test_one_epoch_of_the_probe(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--epochs", "1", "--pool", "50", "--set", "consistency=2.5",
          "consistency_prior=true"])
    out = capsys.readouterr().out
    assert "'consistency': 2.5, 'consistency_prior': True" in out
    line = re.search(r"epoch 0: eval ([0-9.]+), train mode ([0-9.]+), eval classes \[(.*)\]", out)
    assert line is not None
    assert 0 <= float(line.group(1)) <= 1 and 0 <= float(line.group(2)) <= 1
    assert sum(int(v) for v in line.group(3).split(",")) == 50
    with pytest.raises(SystemExit):
        main(["--preset", "nope"])
