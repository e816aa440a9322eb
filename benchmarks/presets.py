"""Named benchmark configurations: ``smoke`` (CI), ``cpu`` (the table on 2 CPU cores) and
``paper`` (ResNet-34, the reference schedule, for a GPU).

Method schedules are given in epochs. ``paper`` uses the published values. ``cpu`` trains for
fewer epochs, so the schedule-bearing defaults are scaled by the same factor as the run length
(epochs / 150 of the FBR reference; Co-teaching's ramp and FINE's refresh period are kept as
published because they are short already), and FBR makes fewer clean passes (see below).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from benchmarks.methods import TrainConfig

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True)
class Preset:
    """A named configuration; every field can be overridden from the command line."""

    name: str
    dataset: str
    train: TrainConfig
    clean_size: int | float
    methods: tuple[str, ...]
    noises: tuple[str, ...]
    seeds: tuple[int, ...]
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: int = 1
    threads: int | None = None  # torch threads per job; None = torch's default
    diag_every: int = 10
    limit_train: int | None = None
    limit_test: int | None = None
    device: str = "cpu"
    note: str = ""


ALL_METHODS = ("ce", "clean_only", "coteaching", "coteaching_plus", "fine", "l2rw", "mwnet",
               "fbr")

# --------------------------------------------------------------------------- cpu
# Sizing for 2 CPU cores and the 5,170-image subset (4,920 noisy pool + 250 clean, 508 test).
# Two goals pull apart: CE must train long enough to memorise the noisy labels (the regime the
# paper's claim is about), and the default table (worst, aggre, rand1 x 3 seeds x methods) must
# fit in about an hour. Measured on this machine (CE on worst, seed 0, one thread each):
#   * with crop+flip augmentation the small CNN barely memorises within a CPU budget: width 16,
#     60 epochs: 24-26% of the noisy labels memorised (weight decay 5e-4 or 0); width 32 (2.5x
#     the cost), 60 epochs: 32%. CE's last epoch is then within 1-3 points of its best, i.e.
#     there is little memorisation for any method to prevent;
#   * without augmentation, width 16, 40 epochs (lr x0.1 at 20 and 30): 79% memorised by epoch
#     30, 85% at 40; CE ends at 45.5% against a best epoch of 50.0%: the regime of the paper.
# So the cpu preset turns augmentation off (``--augment`` turns it back on) rather than
# shrinking the data (not allowed: the subset is the data) or the schedule below memorisation.
# Measured seconds per epoch, one thread, width 16, no augmentation (CE = 2.0 s): clean-only
# 1.7, FBR 1.8 (2 clean passes), FINE 1.5-2.0 (+ ~1 s per refresh), Co-teaching+ 3.9,
# Co-teaching 4.3, L2RW 6.6, MW-Net 12.4. The default method set (CE, clean-only,
# Co-teaching, FINE, L2RW, FBR: ~9 CE-epochs of work per epoch) x 40 epochs x 9 (noise, seed)
# pairs is ~6,500 core-seconds: about 55 minutes as 2 single-threaded jobs on 2 idle cores
# (two small single-threaded runs use 2 cores better than one run with 2 threads).
# Co-teaching+ and MW-Net (together another ~8 CE-epochs per epoch; MW-Net's second-order step
# alone is 6x CE on CPU) are one flag away: ``--methods all`` (about 1 h 50 min).
# FBR makes 2 clean passes per epoch instead of the reference 30: 30 passes over 250 images
# would cost 1.5 extra pool epochs and overfit the tiny clean set. Schedules given in epochs
# (FBR warm-up 20 and alpha switch 40 of 150, FINE warm-up 40, Co-teaching+ init 20) are scaled
# by epochs / 150; Co-teaching's ramp T_k = 10 and FINE's refresh period 10 stay as published.
CPU_EPOCHS = 40
CPU_SCALE = CPU_EPOCHS / 150

CPU = Preset(
    name="cpu",
    dataset="cifar10n-subset",
    train=TrainConfig(arch="cnn", width=16, epochs=CPU_EPOCHS, batch_size=128, lr=0.02,
                      momentum=0.9, weight_decay=5e-4, augment=False,
                      milestones=(CPU_EPOCHS // 2, CPU_EPOCHS * 3 // 4)),
    clean_size=250,
    methods=("ce", "clean_only", "coteaching", "fine", "l2rw", "fbr"),
    noises=("worst", "aggre", "rand1"),
    seeds=(0, 1, 2),
    method_params={
        "fbr": {"warmup": round(20 * CPU_SCALE), "clean_passes": 2,
                "alpha_switch": round(40 * CPU_SCALE)},
        "fine": {"warmup": round(40 * CPU_SCALE), "every": 10},
        "coteaching_plus": {"init_epoch": round(20 * CPU_SCALE)},
    },
    jobs=2,
    threads=1,
)

# --------------------------------------------------------------------------- paper
# ResNet-34 and the FBR reference schedule (method.md): SGD lr 0.02, momentum 0.9, weight
# decay 1e-3, 150 epochs, multi-step decay (milestones not stated in method.md; 80 / 120 here),
# 2,000 clean samples out of 50,000 (4%), 30 clean passes per epoch, warm-up 20, alpha switch 40.
PAPER = Preset(
    name="paper",
    dataset="cifar10n",
    train=TrainConfig(arch="resnet34", width=64, epochs=150, batch_size=128, lr=0.02,
                      momentum=0.9, weight_decay=1e-3, milestones=(80, 120),
                      channels_last=True),
    clean_size=0.04,
    methods=ALL_METHODS,
    noises=("worst", "aggre", "rand1"),
    seeds=(0, 1, 2),
    method_params={"fbr": {"warmup": 20, "clean_passes": 30, "alpha_switch": 40},
                   "fine": {"warmup": 40, "every": 10},
                   "coteaching_plus": {"init_epoch": 20}},
    device="cuda",
)

# --------------------------------------------------------------------------- smoke
# A few hundred images, 2 epochs, every method, schedules shortened so that every code path
# (FBR weighting, FINE selection, Co-teaching+ disagreement) runs in the second epoch.
SMOKE = Preset(
    name="smoke",
    dataset="cifar10n-subset",
    train=TrainConfig(arch="cnn", width=8, epochs=2, batch_size=32, lr=0.02, momentum=0.9,
                      weight_decay=5e-4, milestones=(2,)),
    clean_size=60,
    methods=ALL_METHODS,
    noises=("worst",),
    seeds=(0,),
    method_params={"fbr": {"warmup": 1, "clean_passes": 1, "alpha_switch": 1},
                   "fine": {"warmup": 1, "every": 1},
                   "coteaching_plus": {"init_epoch": 1}},
    limit_train=400,
    limit_test=200,
    diag_every=1,
    threads=1,
)

PRESETS: dict[str, Preset] = {p.name: p for p in (CPU, PAPER, SMOKE)}


def get_preset(name: str, **overrides: Any) -> Preset:
    """A preset by name with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"Expected `preset` to be one of {sorted(PRESETS)}, but got {name!r}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
