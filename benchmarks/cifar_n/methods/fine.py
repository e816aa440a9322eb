"""FINE (Kim et al., "FINE Samples for Learning with Noisy Labels", NeurIPS 2021).

Filtering by eigenvectors: for each class ``c`` the principal direction ``u_c`` of the
features of the samples (currently believed clean) labelled ``c`` (the top right singular
vector of that feature matrix, i.e. the principal eigenvector of its uncentred Gram matrix
``F_c^T F_c``); every sample's alignment score is

.. math::
    s_i = |\\langle u_{y_i}, f_i / \\|f_i\\| \\rangle|,

and per class a 2-component Gaussian mixture on the scores keeps the samples whose posterior
of the higher-mean component exceeds ``zeta``. Published defaults (official code,
``dynamic_selection``): warm-up 40 epochs of plain CE, selection refreshed every 10 epochs,
``zeta = 0.5``, GMM with full covariance, ``tol = 1e-6``, ``max_iter = 100``; the directions come
from the previous round's selected samples (all samples in the first round). Features are the
penultimate layer in eval mode on un-augmented images. The GMM is scikit-learn's.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method
from benchmarks.cifar_n.models import head
from robustweights import FeatureCapture

__all__ = ["FINE", "alignment_scores", "fine_select", "gmm_clean_mask", "principal_directions"]


def principal_directions(features: np.ndarray, labels: np.ndarray, num_classes: int
                         ) -> np.ndarray:
    """(C, D) unit principal direction per class: the principal eigenvector of the class's
    uncentred Gram matrix :math:`F_c^T F_c` (= the top right singular vector of :math:`F_c`, as
    the official code takes it; ``eigh`` of the D x D matrix is much cheaper than an SVD of the
    N_c x D one). Rows of absent classes are 0; the sign is arbitrary (scores use ``|.|``)."""
    dirs = np.zeros((num_classes, features.shape[1]))
    for c in range(num_classes):
        fc = features[labels == c]
        if len(fc):
            dirs[c] = np.linalg.eigh(fc.T @ fc)[1][:, -1]
    return dirs


def alignment_scores(features: np.ndarray, labels: np.ndarray, directions: np.ndarray
                     ) -> np.ndarray:
    """``|<u_{y_i}, f_i / ||f_i||>|`` for every sample, (N,)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.maximum(norms, np.finfo(features.dtype).tiny)
    return np.abs(np.sum(unit * directions[labels], axis=1))


def gmm_clean_mask(scores: np.ndarray, labels: np.ndarray, num_classes: int, *,
                   zeta: float = 0.5, seed: int = 0) -> np.ndarray:
    """Per class, fit a 2-component GMM to the scores; keep samples whose posterior of the
    higher-mean component is above ``zeta``. Classes with fewer than 2 samples keep them all."""
    keep = np.zeros(len(scores), dtype=bool)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            keep[members] = True
            continue
        s = scores[members].reshape(-1, 1).astype(np.float64)
        with warnings.catch_warnings():  # tol 1e-6 often needs more than 100 iterations
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm = GaussianMixture(n_components=2, covariance_type="full", tol=1e-6,
                                  max_iter=100, random_state=seed).fit(s)
        post = gmm.predict_proba(s)[:, int(np.argmax(gmm.means_.ravel()))]
        keep[members] = post > zeta
    return keep


def fine_select(features: np.ndarray, labels: np.ndarray, num_classes: int,
                previous: np.ndarray | None = None, *, zeta: float = 0.5, seed: int = 0
                ) -> np.ndarray:
    """One FINE round: directions from the ``previous`` selection (boolean mask; all samples if
    None, and all samples of a class whose previous selection is empty), scores of every
    sample, per-class GMM. Returns the new boolean selection."""
    basis = np.ones(len(labels), dtype=bool) if previous is None else previous.copy()
    for c in range(num_classes):
        if not basis[labels == c].any():
            basis[labels == c] = True
    dirs = principal_directions(features[basis], labels[basis], num_classes)
    return gmm_clean_mask(alignment_scores(features, labels, dirs), labels, num_classes,
                          zeta=zeta, seed=seed)


class FINE(Method):
    """FINE with its published defaults (see the module docstring); trains on pool + clean
    subset, the clean samples being ordinary labelled data that FINE may also drop."""

    name = "fine"
    selects = True

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {"warmup": 40, "every": 10, "zeta": 0.5}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.model = ctx.new_model()
        self.cap = FeatureCapture(head(self.model))
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)
        self.x, self.y = ctx.union()
        self.selected: np.ndarray | None = None  # boolean over the union

    def refresh(self, epoch: int) -> None:
        _, feats = self.c.predict(self.model, self.x, self.cap)
        if feats is None:
            raise RuntimeError("FINE: the feature capture recorded nothing")
        self.selected = fine_select(feats.double().cpu().numpy(), self.y.cpu().numpy(),
                                    self.c.num_classes, self.selected,
                                    zeta=float(self.params["zeta"]), seed=self.c.seed + epoch)

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        warm, every = int(self.params["warmup"]), max(1, int(self.params["every"]))
        if epoch >= warm and (epoch - warm) % every == 0:
            self.refresh(epoch)
        active = (torch.arange(len(self.y), device=c.device) if self.selected is None else
                  torch.from_numpy(np.flatnonzero(self.selected)).to(c.device))
        self.model.train()
        loss = self.ce_steps(self.model, self.opt, self.x, self.y,
                             (active[b] for b in c.batches(len(active))))
        self.sched.step()
        kept = (np.ones(c.n_pool) if self.selected is None
                else self.selected[: c.n_pool].astype(float))
        return EpochLog(loss, kept, {"selected": float(kept.mean())})

    def eval_model(self) -> nn.Module:
        return self.model
