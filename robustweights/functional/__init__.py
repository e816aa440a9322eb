r"""Stateless functional forms of the reweighters, as ``torch.nn.functional`` is to ``torch.nn``.

* :func:`fbr_weights`: feature-based reweighting (FBR) of one batch against one clean set;
* :func:`l2rw_weights`: last-layer L2RW of one batch against one clean batch.

They take tensors (or NumPy arrays / DLPack producers) and return torch tensors; they keep no
state, cache nothing and never communicate across ranks. The classes
(:class:`~robustweights.SurrogateReweighter`, :class:`~robustweights.MetaReweighter`) are built
on the same kernels (:mod:`robustweights.functional.fbr`, :mod:`robustweights.functional.l2rw`)
and add cached clean statistics, per-sample state and the distributed reductions.
"""

from robustweights.functional.fbr import fbr_weights
from robustweights.functional.l2rw import l2rw_weights

__all__ = ["fbr_weights", "l2rw_weights"]
