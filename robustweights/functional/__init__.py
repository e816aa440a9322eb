r"""Stateless functional forms of the reweighters, as ``torch.nn.functional`` is to ``torch.nn``.

* :func:`surrogate_weights`: feature-based reweighting (FBR) of one batch against one clean set,
  the twin of :class:`~robustweights.SurrogateReweighter`;
* :func:`meta_weights`: last-layer L2RW of one batch against one clean batch, the twin of
  :class:`~robustweights.MetaReweighter`;
* :func:`model_meta_weights`: full-network L2RW of one batch against one clean batch, the twin
  of :class:`~robustweights.ModelMetaReweighter`;
* :func:`small_loss_weights`: Co-teaching's small-loss selection as weights, from a peer
  network's per-sample losses.

They take tensors (the first two also NumPy arrays / DLPack producers) and return torch tensors;
they keep no state, cache nothing and never communicate across ranks. The classes are built on
the same kernels (:mod:`robustweights.functional.surrogate`, :mod:`robustweights.functional.meta`,
:mod:`robustweights.functional.model_meta`; the kernels are internal) and add cached clean
statistics, per-sample state and the distributed reductions.
"""

from robustweights.functional.meta import meta_weights
from robustweights.functional.model_meta import model_meta_weights
from robustweights.functional.surrogate import surrogate_weights
from robustweights.selection import small_loss_weights

__all__ = ["meta_weights", "model_meta_weights", "small_loss_weights", "surrogate_weights"]
