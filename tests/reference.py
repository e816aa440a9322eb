"""Slow, obviously-correct references the kernels are tested against.

Written for clarity, not speed: explicit Gram matrices, per-sample Python loops and autograd
through a literal virtual SGD step. Nothing here is shared with the library's code paths.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call


def fbr_reference(F, y, G, yc, num_classes, alpha, *, w0=0.5, w_max=1.0, ratio=None,
                  missing_weight=0.0):
    """FBR steps 1-5 from the literal B x M Gram matrix (float64 NumPy, loops per sample).

    Returns (d, w) with d = nan for samples whose label has no clean sample.
    """
    F = np.asarray(F, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    y, yc = np.asarray(y), np.asarray(yc)
    present = [c for c in range(num_classes) if np.any(yc == c)]
    # Step 1: balanced centre = mean of class means over present classes.
    mu = np.mean([G[yc == c].mean(0) for c in present], axis=0)
    Fh, Gh = F - mu, G - mu
    gram = Fh @ Gh.T  # B x M, the reference code's object
    B = F.shape[0]
    d = np.full(B, np.nan)
    for i in range(B):
        S = {c: gram[i, yc == c].mean() for c in present}
        second = sorted(S.values(), reverse=True)[1]
        Sp = {c: S[c] - second for c in present}
        if y[i] in Sp:
            d[i] = Sp[y[i]] - alpha * sum(v for c, v in Sp.items() if c != y[i])
    w = np.zeros(B)
    valid = ~np.isnan(d)
    negs = [i for i in range(B) if valid[i] and d[i] < 0]
    if not negs:
        w[:] = w_max
    else:
        steps = sorted(w0 / abs(d[i]) for i in negs)
        if ratio is None:
            eta = steps[-1]
        else:
            k = min(max(1, int(np.floor(ratio * B))), len(negs))
            eta = steps[k - 1]
        for i in range(B):
            if valid[i]:
                wi = min(max(w0 + eta * d[i], 0.0), w_max)
                w[i] = 0.0 if wi <= w0 else wi
    w[~valid] = missing_weight
    return d, w


def l2rw_virtual_step_reference(model: nn.Module, loss_fn, x, y, xc, yc, lr=1.0):
    """u_i = -d L_clean(theta - lr * grad sum_i eps_i l_i) / d eps_i at eps = 0, by autograd
    through the literal virtual SGD step (Ren et al.'s lookahead), buffers cloned."""
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    eps = torch.zeros(x.shape[0], dtype=x.dtype, requires_grad=True)
    train_losses = loss_fn(functional_call(model, (params, buffers), (x,)), y)
    grads = torch.autograd.grad((eps * train_losses).sum(), list(params.values()),
                                create_graph=True)
    stepped = {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    clean_loss = loss_fn(functional_call(model, (stepped, buffers), (xc,)), yc).mean()
    (d_eps,) = torch.autograd.grad(clean_loss, eps)
    return -d_eps.detach()


def l2rw_normalise(u: np.ndarray) -> np.ndarray:
    pos = np.maximum(u, 0)
    return pos / pos.sum() if pos.sum() > 0 else np.zeros_like(pos)
