"""The benchmark methods, one module each, by CLI name."""

from benchmarks.methods.base import AUGMENTATIONS, Context, EpochLog, Method, TrainConfig
from benchmarks.methods.ce import CE
from benchmarks.methods.clean_only import CleanOnly
from benchmarks.methods.coteaching import CoTeaching
from benchmarks.methods.coteaching_plus import CoTeachingPlus
from benchmarks.methods.fbr import FBR, FBRPlus
from benchmarks.methods.fine import FINE
from benchmarks.methods.l2rw import L2RW
from benchmarks.methods.mwnet import MWNet

#: CLI name -> class, in table order.
METHODS: dict[str, type[Method]] = {
    m.name: m for m in (CE, CleanOnly, CoTeaching, CoTeachingPlus, FINE, L2RW, MWNet, FBR,
                        FBRPlus)
}

__all__ = [
    "AUGMENTATIONS",
    "CE",
    "FBR",
    "FINE",
    "L2RW",
    "METHODS",
    "CleanOnly",
    "CoTeaching",
    "CoTeachingPlus",
    "Context",
    "EpochLog",
    "FBRPlus",
    "MWNet",
    "Method",
    "TrainConfig",
]
