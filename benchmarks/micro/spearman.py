"""Section ``spearman``: rank correlation of last-layer and full-network L2RW scores on a briefly
trained benchmark model (the real CIFAR-10N subset when present, else synthetic images)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from benchmarks.micro.common import CE, Sizes, Trainer
from benchmarks.micro.harness import spearman
from benchmarks.micro.refs import load_cifar10n
from robustweights import MetaReweighter, ModelMetaReweighter


def _training_data(sizes: Sizes, device: torch.device, data_dir: Path | None,
                   smoke: bool = False) -> dict[str, Any]:
    """Noisy-labelled training images, a trusted clean hold-out and a test set."""
    data = None if smoke else load_cifar10n(data_dir)
    C = sizes.num_classes
    if data is None:
        n = sizes.synthetic_train
        g = torch.Generator().manual_seed(7)
        y_true = torch.randint(0, C, (n + 256,), generator=g)
        proto = torch.randn(C, 3, 8, 8, generator=g)
        x = nn.functional.interpolate(proto[y_true], size=32) \
            + 0.8 * torch.randn(n + 256, 3, 32, 32, generator=g)
        flip = torch.rand(n + 256, generator=g) < 0.4
        noisy = torch.where(flip, torch.randint(0, C, (n + 256,), generator=g), y_true)
        xtr, ytr, ynoisy = x[:n], y_true[:n], noisy[:n]
        xte, yte = x[n:], y_true[n:]
        source = (f"synthetic ({n} images of 10 class templates + noise, 40% symmetric label "
                  "noise)")
    else:
        mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
        std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)

        def prep(a: np.ndarray) -> torch.Tensor:
            return (torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255 - mean) / std

        xtr, ytr = prep(data["train_images"]), torch.from_numpy(data["train_labels"])
        xte, yte = prep(data["test_images"]), torch.from_numpy(data["test_labels"])
        ynoisy = torch.from_numpy(data["noisy_labels"])
        source = "CIFAR-10N subset, human 'worse' labels"
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(8))
    clean_idx, train_idx = perm[:sizes.clean_holdout], perm[sizes.clean_holdout:]
    return {"source": source,
            "x": xtr[train_idx].to(device), "y": ynoisy[train_idx].to(device),
            "y_true": ytr[train_idx].to(device),
            "xc": xtr[clean_idx].to(device), "yc": ytr[clean_idx].to(device),
            "xte": xte.to(device), "yte": yte.to(device)}


def run_spearman(sizes: Sizes, device: torch.device, data_dir: Path | None,
                 progress: bool, smoke: bool = False) -> dict[str, Any]:
    d = _training_data(sizes, device, data_dir, smoke)
    tr = Trainer(sizes, device, seed=1)
    for group in tr.opt.param_groups:
        group["lr"] = sizes.train_lr
    B, n = sizes.step_B, d["x"].shape[0]
    g = torch.Generator().manual_seed(9)
    t0 = time.perf_counter()
    steps = sizes.train_epochs * (n // B)
    bar = tqdm(total=steps, desc="train for spearman", disable=not progress)
    for _ in range(sizes.train_epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(n // B):
            idx = perm[i * B:(i + 1) * B]
            tr.plain_step(d["x"][idx], d["y"][idx])
            bar.update()
    bar.close()
    train_s = time.perf_counter() - t0
    tr.model.eval()
    with torch.no_grad():
        acc = float((tr.model(d["xte"]).argmax(1) == d["yte"]).float().mean())
    tr.model.train()
    full = ModelMetaReweighter(tr.model, CE, normalization="none")
    last = MetaReweighter(sizes.num_classes, normalization="none")
    rhos: list[float] = []
    rhos_w: list[float] = []
    agree: list[float] = []
    noisy_pos: dict[str, list[float]] = {"last": [], "full": []}
    perm = torch.randperm(n, generator=g).to(device)
    cperm = torch.randperm(d["xc"].shape[0], generator=g).to(device)
    Bc = min(sizes.l2rw_clean_B, d["xc"].shape[0])
    for b in range(sizes.eval_batches):
        idx = perm[b * B:(b + 1) * B]
        cidx = cperm[(b * Bc) % (d["xc"].shape[0] - Bc + 1):][:Bc]
        x, y, xc, yc = d["x"][idx], d["y"][idx], d["xc"][cidx], d["yc"][cidx]
        with torch.no_grad():  # train mode, as during training (BN batch statistics)
            z = tr.model(x)
            h = tr.capture.features
            zc = tr.model(xc)
            hc = tr.capture.features
        last.weights(logits=z, features=h, labels=y, clean_logits=zc, clean_features=hc,
                     clean_labels=yc)
        full.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
        assert last.last_scores is not None and full.last_scores is not None
        u_l, u_f = last.last_scores.cpu().numpy(), full.last_scores.cpu().numpy()
        rhos.append(spearman(u_l, u_f))
        rhos_w.append(spearman(np.maximum(u_l, 0), np.maximum(u_f, 0)))
        agree.append(float(((u_l > 0) == (u_f > 0)).mean()))
        noisy = (y != d["y_true"][idx]).cpu().numpy()
        for key, u in (("last", u_l), ("full", u_f)):
            noisy_pos[key].append(float(noisy[u > 0].mean()) if (u > 0).any() else float("nan"))
    return {
        "data": d["source"], "model": tr.model_source, "train_images": n,
        "clean_holdout": d["xc"].shape[0], "epochs": sizes.train_epochs, "lr": sizes.train_lr,
        "train_s": train_s, "test_accuracy": acc, "batches": sizes.eval_batches, "B": B,
        "clean_B": Bc,
        "spearman_scores": rhos, "spearman_scores_median": float(np.median(rhos)),
        "spearman_clipped_weights_median": float(np.median(rhos_w)),
        "sign_agreement_median": float(np.median(agree)),
        "noisy_label_rate_among_positive": {k: float(np.nanmedian(v))
                                            for k, v in noisy_pos.items()},
        "noisy_label_rate_in_batches": float((d["y"] != d["y_true"]).float().mean()),
    }
