"""Run one (method, noise, seed) configuration and score it.

The runner owns everything a method must not see: the pool's true labels, the test set and the
clock. Per epoch it records test accuracy, the training loss, and for methods that keep or
weight pool samples the precision / recall of the kept samples against the true labels and the
kept fraction among clean and among noisy samples. Every ``diag_every`` epochs (and at the end)
it also measures memorisation: how many noisy pool samples the evaluated network predicts *as
their noisy label* (eval mode, un-augmented), and stores a snapshot of the pool weights for the
clean-vs-noisy histograms.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from benchmarks.cifar_n.augment import normalize
from benchmarks.cifar_n.data import LabeledImages, build_split
from benchmarks.cifar_n.methods import METHODS, Context, TrainConfig
from robustweights import detect_phases

__all__ = ["RunResult", "RunSpec", "run_one", "selection_stats"]

Progress = Callable[[dict[str, Any]], None]


@dataclass
class RunSpec:
    """Everything that defines one run (and goes into its JSON record)."""

    method: str
    noise: str
    seed: int
    train: TrainConfig = field(default_factory=TrainConfig)
    method_params: dict[str, Any] = field(default_factory=dict)
    dataset: str = "cifar10n-subset"
    clean_size: int | float = 250
    stratified: bool = True
    diag_every: int = 10
    device: str = "cpu"

    @property
    def key(self) -> str:
        return f"{self.method}/{self.noise}/seed{self.seed}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"]["milestones"] = list(self.train.milestones)
        return d


@dataclass
class RunResult:
    """The JSON record of a run plus the weight snapshots (saved separately as .npz)."""

    record: dict[str, Any]
    snapshot_epochs: list[int]
    snapshots: np.ndarray  # (n_snapshots, n_pool) float32, NaN where not visited
    is_clean: np.ndarray  # (n_pool,) bool: noisy label == true label


def selection_stats(weights: np.ndarray, is_clean: np.ndarray,
                    kept: np.ndarray | None = None) -> dict[str, float]:
    """Kept-sample statistics of one epoch's pool weights against the true labels.

    ``kept`` means weight > 0 among visited samples (NaN = not visited), or the method's own
    verdict where it gives one (a floor weight keeps every sample, so the weights alone would
    count every sample as kept). Precision: the share of
    kept samples whose label is correct; recall: the share of correctly labelled samples kept;
    ``weighted_precision``: :math:`\\sum_i w_i [\\text{clean}_i] / \\sum_i w_i`.
    """
    seen = ~np.isnan(weights)
    w = np.where(seen, weights, 0.0)
    kept = seen & (w > 0) if kept is None else seen & (np.nan_to_num(kept) > 0)
    clean, noisy = seen & is_clean, seen & ~is_clean
    nan = float("nan")

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b > 0 else nan

    return {
        "kept_frac": ratio(kept.sum(), seen.sum()),
        "kept_frac_clean": ratio((kept & clean).sum(), clean.sum()),
        "kept_frac_noisy": ratio((kept & noisy).sum(), noisy.sum()),
        "precision": ratio((kept & clean).sum(), kept.sum()),
        "recall": ratio((kept & clean).sum(), clean.sum()),
        "weighted_precision": ratio((w * clean).sum(), w.sum()),
        "mean_weight_clean": ratio(w[clean].sum(), clean.sum()),
        "mean_weight_noisy": ratio(w[noisy].sum(), noisy.sum()),
    }


@torch.no_grad()
def pseudo_stats(pseudo: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """The last epoch's pseudo-labels against the true labels: ``pseudo_coverage``, the share
    of the pool given one, and ``pseudo_precision``, the share of those that are right (NaN if
    none was given)."""
    given = pseudo >= 0
    n = int(given.sum())
    return {"pseudo_coverage": n / max(len(pseudo), 1),
            "pseudo_precision": float((pseudo[given] == true[given]).mean()) if n else math.nan}


def _accuracy(ctx: Context, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    logits, _ = ctx.predict(model, x)
    return float((logits.argmax(1) == y).float().mean())


@torch.no_grad()
def _clean_loss(ctx: Context, model: torch.nn.Module) -> float:
    logits, _ = ctx.predict(model, ctx.clean_x)
    return float(torch.nn.functional.cross_entropy(logits, ctx.clean_y))


@torch.no_grad()
def _memorisation(ctx: Context, model: torch.nn.Module, true: torch.Tensor
                  ) -> dict[str, float]:
    pred = ctx.predict(model, ctx.pool_x)[0].argmax(1)
    noisy = ctx.pool_y != true
    nan = float("nan")
    n_noisy = int(noisy.sum())
    return {
        "memorised": float((pred[noisy] == ctx.pool_y[noisy]).float().mean()) if n_noisy else nan,
        "corrected": float((pred[noisy] == true[noisy]).float().mean()) if n_noisy else nan,
        "fit_clean": float((pred[~noisy] == ctx.pool_y[~noisy]).float().mean()),
    }


@torch.no_grad()
def _feature_shares(ctx: Context, method: Any, true: torch.Tensor) -> dict[str, float]:
    """Where the pool samples' features sit relative to the clean prototypes, for methods that
    score them (FBR's ``feature_directions``): the share of wrongly labelled samples whose
    nearest centred prototype is their *given* class (the filter keeps them), the share whose
    nearest is their *true* class (recognisable), and the share of correctly labelled samples
    nearest their class."""
    probe = getattr(method, "feature_directions", None)
    if probe is None:
        return {}
    d_given = probe(ctx.pool_x, ctx.pool_y)
    if d_given is None:
        return {}
    d_true = probe(ctx.pool_x, true)
    noisy = ctx.pool_y != true
    nan = float("nan")

    def share(mask: torch.Tensor, of: torch.Tensor) -> float:
        return float(mask[of].float().mean()) if bool(of.any()) else nan

    return {"noisy_nearest_given": share(d_given > 0, noisy),
            "noisy_nearest_true": share(d_true > 0, noisy),
            "clean_nearest_given": share(d_given > 0, ~noisy)}


def run_one(spec: RunSpec, ds: LabeledImages, progress: Progress | None = None) -> RunResult:
    """Train ``spec.method`` on ``ds`` under ``spec.noise`` with ``spec.seed`` and score it."""
    if spec.method not in METHODS:
        raise ValueError(f"Expected `method` to be one of {list(METHODS)}, but got "
                         f"{spec.method!r}")
    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed)
    split = build_split(ds, spec.noise, spec.seed, spec.clean_size, spec.device,
                        stratified=spec.stratified)
    ctx = Context(split.pool_images, split.pool_labels, split.clean_images, split.clean_labels,
                  split.num_classes, spec.train, spec.seed, spec.device)
    test_x = ctx.memory_format(normalize(split.test_images))
    test_y = split.test_labels.long()
    cls = METHODS[spec.method]
    params = dict(spec.method_params)
    if "noise_rate" in cls.defaults() and "noise_rate" not in params:
        params["noise_rate"] = split.nominal_noise_rate
    method = cls(**params)
    method.setup(ctx)
    is_clean_t = split.pool_labels == split.pool_true
    is_clean = is_clean_t.cpu().numpy()

    epochs = spec.train.epochs
    curves: dict[str, list[Any]] = {k: [] for k in (
        "test_acc", "train_loss", "epoch_time", "epoch_cpu_time", "kept_frac", "kept_frac_clean",
        "kept_frac_noisy", "precision", "recall", "weighted_precision", "mean_weight_clean",
        "mean_weight_noisy", "lr", "clean_loss", "coupling", "extra")}
    diagnostics: list[dict[str, float]] = []
    snap_epochs: list[int] = []
    snaps: list[np.ndarray] = []
    start = time.perf_counter()
    for epoch in range(epochs):
        lr = float(_lr_of(method))
        t0, c0 = time.perf_counter(), time.process_time()
        log = method.train_epoch(epoch)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        acc = _accuracy(ctx, method.eval_model(), test_x, test_y)
        stats = (selection_stats(log.weights, is_clean, log.kept) if log.weights is not None
                 else dict.fromkeys(("kept_frac", "kept_frac_clean", "kept_frac_noisy",
                                     "precision", "recall", "weighted_precision",
                                     "mean_weight_clean", "mean_weight_noisy"), float("nan")))
        for k, v in stats.items():
            curves[k].append(v)
        curves["test_acc"].append(acc)
        curves["train_loss"].append(log.loss)
        curves["epoch_time"].append(dt)
        curves["epoch_cpu_time"].append(dc)
        curves["lr"].append(lr)
        curves["clean_loss"].append(_clean_loss(ctx, method.eval_model()))
        curves["coupling"].append(log.extra.get("coupling", float("nan")))
        curves["extra"].append(log.extra)
        last = epoch == epochs - 1
        if last or (spec.diag_every > 0 and (epoch + 1) % spec.diag_every == 0):
            diagnostics.append({"epoch": epoch,
                                **_memorisation(ctx, method.eval_model(), split.pool_true),
                                **_feature_shares(ctx, method, split.pool_true)})
            if log.weights is not None:
                snap_epochs.append(epoch)
                snaps.append(log.weights.astype(np.float32))
        if progress is not None:
            progress({"key": spec.key, "epoch": epoch + 1, "epochs": epochs, "loss": log.loss,
                      "acc": acc, "best": max(curves["test_acc"]), "epoch_time": dt})
    wall = time.perf_counter() - start
    accs = curves["test_acc"]
    best_epoch = int(np.argmax(accs))
    final = {k: curves[k][-1] for k in ("kept_frac", "kept_frac_clean", "kept_frac_noisy",
                                         "precision", "recall", "weighted_precision")}
    if log.kept is not None:  # precision / recall above are of the filter's verdict
        final["kept_by"] = "filter"
    if log.pseudo_labels is not None:
        final.update(pseudo_stats(log.pseudo_labels, split.pool_true.cpu().numpy()))
    phases = None
    if any(math.isfinite(c) for c in curves["coupling"]):
        # Epoch-level signals through the library's causal phase rule: kept fraction, clean loss
        # (eval mode, the clean subset) and the coupling magnitude (mean |u| or mean |d|).
        b = detect_phases(curves["kept_frac"], curves["clean_loss"], curves["coupling"])
        phases = {"filtering": b.filtering, "post_filtering": b.post_filtering}
    record = {
        "spec": spec.to_json(),
        "key": spec.key,
        "method": spec.method,
        "noise": spec.noise,
        "seed": spec.seed,
        "selects": cls.selects,
        # The parameters the run used, defaults included: a default may change later.
        "params": method.params,
        "n_pool": ctx.n_pool,
        "n_clean": ctx.n_clean,
        "n_test": int(test_y.shape[0]),
        "pool_noise_rate": split.noise_rate_pool,
        "nominal_noise_rate": split.nominal_noise_rate,
        "best_acc": float(accs[best_epoch]),
        "best_epoch": best_epoch,
        "last_acc": float(accs[-1]),
        "final": final,
        "memorisation": diagnostics[-1] if diagnostics else {},
        "phases": phases,
        "diagnostics": diagnostics,
        "wall_time": wall,
        "epoch_time_mean": float(np.mean(curves["epoch_time"])),
        "epoch_cpu_time_mean": float(np.mean(curves["epoch_cpu_time"])),
        "curves": curves,
        "torch_threads": torch.get_num_threads(),
    }
    record = _finite(record)
    snapshots = (np.stack(snaps) if snaps else np.zeros((0, ctx.n_pool), np.float32))
    return RunResult(record, snap_epochs, snapshots, is_clean)


def _lr_of(method: Any) -> float:
    for name in ("opt", "opts"):
        opt = getattr(method, name, None)
        if isinstance(opt, list):
            opt = opt[0]
        if opt is not None:
            return float(opt.param_groups[0]["lr"])
    return float("nan")


def _finite(obj: Any) -> Any:
    """Replace NaN / inf by None so the record is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _finite(obj.item())
    return obj
