"""The benchmark methods, one module each, by CLI name."""

from benchmarks.cifar_n.methods.base import AUGMENTATIONS, Context, EpochLog, Method, TrainConfig
from benchmarks.cifar_n.methods.ce import CE, CEELR, CEMixup, CEMixupELR
from benchmarks.cifar_n.methods.clean_only import CleanOnly
from benchmarks.cifar_n.methods.coteaching import CoTeaching, CoTeachingMixup
from benchmarks.cifar_n.methods.coteaching_plus import CoTeachingPlus
from benchmarks.cifar_n.methods.fbr import FBR, FBRPlus
from benchmarks.cifar_n.methods.fine import FINE
from benchmarks.cifar_n.methods.l2rw import L2RW
from benchmarks.cifar_n.methods.mwnet import MWNet

#: CLI name -> class, in table order.
METHODS: dict[str, type[Method]] = {
    m.name: m for m in (CE, CEMixup, CEELR, CEMixupELR, CleanOnly, CoTeaching, CoTeachingMixup,
                        CoTeachingPlus, FINE, L2RW, MWNet, FBR, FBRPlus)
}

__all__ = [
    "AUGMENTATIONS",
    "CE",
    "CEELR",
    "FBR",
    "FINE",
    "L2RW",
    "METHODS",
    "CEMixup",
    "CEMixupELR",
    "CleanOnly",
    "CoTeaching",
    "CoTeachingMixup",
    "CoTeachingPlus",
    "Context",
    "EpochLog",
    "FBRPlus",
    "MWNet",
    "Method",
    "TrainConfig",
]
