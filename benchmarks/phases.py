r"""The three phases of meta-reweighting (arXiv 2510.12209), reproduced in under a minute.

    python -m benchmarks.phases [--out results/phases] [--figures-dir DIR] [--smoke]

**Regime**, the one the analysis covers: a linear softmax classifier
:math:`z = \Theta\,\phi(x)` on fixed random ReLU features
:math:`\phi(x) = \sqrt{2/m}\,\mathrm{relu}(W x)`, i.e. a wide two-layer network in the lazy
(NTK) regime, where only the output layer moves. Data: ``C`` Gaussian classes, symmetric label
noise, and a small clean subset with true labels. Both lanes train :math:`\Theta` by full-batch
gradient descent on :math:`\frac1N\sum_i w_i\,\mathrm{CE}(z_i, y_i)`.

* **L2RW lane** (meta-reweighting as a gradient flow on the weights, the object of the analysis):
  :math:`u_i = \langle\nabla_\Theta\ell_i, \nabla_\Theta L_{clean}\rangle` is exact for a linear
  head (``MetaReweighter.last_scores``), and :math:`w_i \leftarrow \mathrm{clip}(w_i + \eta_w u_i,
  0, 1)` from :math:`w_i = 0.5`.
* **FBR lane**: ``SurrogateReweighter(mode="incremental")`` on the same features.

A :class:`~robustweights.phases.PhaseMonitor` watches each lane and detects the phases from
what the lane computes: the weights, the clean loss, and the coupling (L2RW scores / FBR
directions). The true clean mask is used only for precision and recall.

**Perturbation sensitivity.** A checkpoint is taken in the geometric middle of each phase the
monitor detected for L2RW (both lanes use the same steps). From it, training is re-run for
``--window`` steps with a tiny perturbation of the clean set: one clean sample dropped (each of
``--drops`` random choices), or all clean features jittered by ``--jitter`` (1e-3) of their
RMS. Both runs start from the same state. Reported per phase, at the end of the window:

* ``tv_step_weights``: the total-variation distance :math:`\frac12\sum_i|\hat w^{pert}_i -
  \hat w^{ref}_i|` in [0, 1] between the normalised per-step weights. For L2RW these are Ren et
  al.'s weights :math:`\hat w = \max(u, 0)/\sum_j\max(u_j, 0)`. For FBR they are its
  weights divided by their sum. For drops: the mean and the max over the drops.
* ``weight_change``: :math:`\mathrm{mean}_i|w^{pert}_i - w^{ref}_i|` of the weights the lane
  trains with (the L2RW gradient-flow weights, FBR's weights).
* ``decision_flips``: the fraction of samples whose per-step kept/dropped decision differs.
* ``clean_gradient_top3_share``: the share of the clean residual mass carried by the three
  worst-fit clean samples. This is the mechanism: as the clean loss falls, the clean gradient
  rests on fewer and fewer samples.

Writes ``phases_dynamics.png``, ``phases_trajectories.png`` and ``phases.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustweights import MetaReweighter, SurrogateReweighter
from robustweights.phases import PhaseMonitor, PostFilteringWarning, detect_phases

PHASE_COLOURS = {"alignment": "#dbe9f6", "filtering": "#fde3c8", "post_filtering": "#e6e6e6"}
LANES = ("L2RW", "FBR")


@dataclass
class Config:
    """Every knob of the run; the defaults are the published figures."""

    n_train: int = 500
    n_clean: int = 50
    num_classes: int = 3
    input_dim: int = 20
    width: int = 1024  # random features m (> n_train: over-parameterised)
    separation: float = 1.5  # distance scale of the class means, in noise standard deviations
    noise: float = 0.4  # symmetric label-noise rate
    steps: int = 2000
    lr: float = 1.0  # gradient descent on the output layer
    eta_w: float = 0.1  # L2RW weight step
    fbr_eta: float = 0.01  # FBR incremental step (the reference value)
    window: int = 50  # K: steps re-run after each perturbation
    drops: int = 8  # clean samples dropped, one at a time
    jitter: float = 1e-3  # relative size of the clean-feature jitter
    n_traces: int = 15  # weight trajectories drawn per group (clean / noisy)
    seed: int = 0


SMOKE = dict(n_train=150, n_clean=20, width=256, steps=400, window=20, drops=4, n_traces=4)


# ------------------------------------------------------------------------------------- data
@dataclass
class Data:
    features: torch.Tensor  # (N, m) phi(x) of the training set
    labels: torch.Tensor  # (N,) possibly noisy
    true_clean: torch.Tensor  # (N,) bool
    clean_features: torch.Tensor  # (M, m)
    clean_labels: torch.Tensor  # (M,)


def make_data(cfg: Config) -> Data:
    """Gaussian classes, symmetric label noise, a clean subset, fixed random ReLU features."""
    g = torch.Generator().manual_seed(cfg.seed)
    c, d = cfg.num_classes, cfg.input_dim
    means = torch.randn(c, d, generator=g, dtype=torch.float64) * cfg.separation / math.sqrt(2)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, c, (n,), generator=g)
        return means[y] + torch.randn(n, d, generator=g, dtype=torch.float64), y

    x, y_true = sample(cfg.n_train)
    xc, yc = sample(cfg.n_clean)
    flip = torch.rand(cfg.n_train, generator=g) < cfg.noise
    shift = torch.randint(1, c, (cfg.n_train,), generator=g)
    y = torch.where(flip, (y_true + shift) % c, y_true)
    w_in = torch.randn(d, cfg.width, generator=g, dtype=torch.float64) / math.sqrt(d)

    def phi(inputs: torch.Tensor) -> torch.Tensor:
        return torch.relu(inputs @ w_in) * math.sqrt(2.0 / cfg.width)

    return Data(phi(x), y, y == y_true, phi(xc), yc)


# ------------------------------------------------------------------------------------ lanes
@dataclass
class Lane:
    """Everything that evolves in one training run: the output layer, the reweighter, and for
    L2RW the gradient-flow weights. ``copy.deepcopy`` of a lane is a checkpoint."""

    name: str
    theta: torch.Tensor
    reweighter: Any
    flow: torch.Tensor | None = None


def new_lane(name: str, data: Data, cfg: Config) -> Lane:
    theta = torch.zeros(cfg.num_classes, cfg.width, dtype=torch.float64)
    if name == "L2RW":
        # normalization="none": the raw scores u are in `last_scores`; bias=False: z = Θ φ.
        meta = MetaReweighter(cfg.num_classes, normalization="none", bias=False, validate=False)
        return Lane(name, theta, meta, torch.full((cfg.n_train,), 0.5, dtype=torch.float64))
    rw = SurrogateReweighter(cfg.num_classes, alpha=1.0 / (cfg.num_classes - 1),
                             mode="incremental", eta=cfg.fbr_eta, validate=False)
    rw.set_clean(features=data.clean_features, labels=data.clean_labels)
    return Lane(name, theta, rw)


def set_clean(lane: Lane, features: torch.Tensor, labels: torch.Tensor) -> None:
    """Point a lane at a (perturbed) clean set. L2RW reads it every step; FBR caches it."""
    if lane.name == "FBR":
        lane.reweighter.set_clean(features=features, labels=labels)


def step(lane: Lane, data: Data, clean: tuple[torch.Tensor, torch.Tensor], cfg: Config
         ) -> dict[str, Any]:
    """One reweighted gradient step. Returns the weights used, the coupling and the clean loss."""
    feats, labels = data.features, data.labels
    logits = feats @ lane.theta.T
    clean_logits = clean[0] @ lane.theta.T
    if lane.name == "L2RW":
        lane.reweighter.weights(logits=logits, features=feats, labels=labels,
                                clean_logits=clean_logits, clean_features=clean[0],
                                clean_labels=clean[1])
        coupling = lane.reweighter.last_scores
        lane.flow = (lane.flow + cfg.eta_w * coupling).clamp(0.0, 1.0)
        w = lane.flow
        step_w = coupling.clamp_min(0)  # Ren et al.'s per-step weights, before normalising
    else:
        w = lane.reweighter.weights(features=feats, labels=labels,
                                    sample_ids=torch.arange(feats.shape[0]))
        coupling = lane.reweighter.last_scores
        step_w = w
    resid = torch.softmax(logits, 1) - F.one_hot(labels, cfg.num_classes).to(logits.dtype)
    lane.theta = lane.theta - cfg.lr * (w[:, None] * resid).T @ feats / feats.shape[0]
    return {"weights": w, "coupling": coupling, "step_weights": step_w,
            "clean_loss": F.cross_entropy(clean_logits, clean[1]).item()}


@dataclass
class Run:
    """The recorded main run of one lane."""

    weights: np.ndarray  # (T, N) the weights used at every step
    step_weights: np.ndarray  # (T, N) un-normalised per-step weights (see step())
    clean_loss: np.ndarray  # (T,)
    coupling: np.ndarray  # (T,) mean |u| or mean |d|
    monitor: PhaseMonitor
    post_filtering_warnings: int  # how many PostFilteringWarning the monitor emitted (0 or 1)
    snapshots: dict[int, Lane] = field(default_factory=dict)  # state before step t


def train(name: str, data: Data, cfg: Config, snapshot_at: set[int]) -> Run:
    lane = new_lane(name, data, cfg)
    clean = (data.clean_features, data.clean_labels)
    monitor = PhaseMonitor(warn=True)
    weights, step_weights, losses, couplings, snaps = [], [], [], [], {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PostFilteringWarning)
        for t in range(cfg.steps):
            if t in snapshot_at:
                snaps[t] = copy.deepcopy(lane)
            out = step(lane, data, clean, cfg)
            report = monitor.update(out["weights"], clean_loss=out["clean_loss"],
                                    coupling=out["coupling"], true_clean=data.true_clean)
            weights.append(out["weights"].numpy().astype(np.float32))
            step_weights.append(out["step_weights"].numpy().astype(np.float32))
            losses.append(out["clean_loss"])
            couplings.append(report.coupling)
    n_warnings = sum(issubclass(w.category, PostFilteringWarning) for w in caught)
    return Run(np.stack(weights), np.stack(step_weights), np.array(losses), np.array(couplings),
               monitor, n_warnings, snaps)


# ------------------------------------------------------------------ perturbation sensitivity
def perturbed_clean_sets(data: Data, cfg: Config) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``drop<j>``: the clean set without one sample; ``jitter``: features + 1e-3 RMS noise."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    feats, labels = data.clean_features, data.clean_labels
    out = {}
    for j, idx in enumerate(torch.randperm(feats.shape[0], generator=g)[: cfg.drops].tolist()):
        keep = torch.arange(feats.shape[0]) != idx
        out[f"drop{j}"] = (feats[keep], labels[keep])
    rms = feats.pow(2).mean().sqrt()
    noise = torch.randn(feats.shape, generator=g, dtype=feats.dtype)
    out["jitter"] = (feats + cfg.jitter * rms * noise, labels)
    return out


def _normalised(w: np.ndarray) -> np.ndarray:
    total = float(w.sum())
    return w / total if total > 0 else w


def clean_gradient_concentration(lane: Lane, data: Data, top: int = 3) -> float:
    r"""Share of the clean-loss gradient's residual mass carried by the ``top`` worst-fit clean
    samples, :math:`\sum_{top}\|s_j\| / \sum_j \|s_j\|`, with :math:`s_j` the clean residuals."""
    logits = data.clean_features @ lane.theta.T
    resid = torch.softmax(logits, 1) - F.one_hot(data.clean_labels, logits.shape[1])
    norms = resid.norm(dim=1).sort(descending=True).values
    return float(norms[:top].sum() / norms.sum())


def sensitivity(run: Run, t: int, data: Data, cfg: Config) -> dict[str, Any]:
    """Re-run ``window`` steps from the checkpoint before step ``t`` under each perturbation and
    compare with the unperturbed run at the end of the window."""
    end = t + cfg.window - 1  # the window's last step in the main run
    w_ref = run.weights[end].astype(np.float64)
    sw_ref = _normalised(run.step_weights[end].astype(np.float64))
    rows = {}
    for kind, clean in perturbed_clean_sets(data, cfg).items():
        lane = copy.deepcopy(run.snapshots[t])
        set_clean(lane, *clean)
        for _ in range(cfg.window):
            out = step(lane, data, clean, cfg)
        w = out["weights"].numpy().astype(np.float64)
        sw = _normalised(out["step_weights"].numpy().astype(np.float64))
        rows[kind] = {"tv_step_weights": 0.5 * float(np.abs(sw - sw_ref).sum()),
                      "weight_change": float(np.abs(w - w_ref).mean()),
                      "decision_flips": float(((sw > 0) != (sw_ref > 0)).mean())}
    drops = [v for k, v in rows.items() if k.startswith("drop")]
    drop_one = {f"{key}_{agg.__name__}": float(agg([r[key] for r in drops]))
                for key in drops[0] for agg in (np.mean, np.max)}
    return {"step": t, "window": cfg.window, "drop_one": drop_one, "jitter": rows["jitter"],
            "clean_gradient_top3_share": clean_gradient_concentration(run.snapshots[t], data),
            "runs": rows}


def checkpoints(bounds: dict[str, int | None], cfg: Config) -> dict[str, int]:
    """One step in the (geometric) middle of each detected phase, leaving room for the window."""
    last = cfg.steps - cfg.window
    edges = {"alignment": (1, bounds["filtering"] or last),
             "filtering": (bounds["filtering"], bounds["post_filtering"] or last),
             "post_filtering": (bounds["post_filtering"], last)}
    out = {}
    for phase, (lo, hi) in edges.items():
        if lo is None or hi is None or hi <= lo or lo > last:
            continue
        out[phase] = round(math.sqrt(max(lo, 1) * hi))
    return out


# ---------------------------------------------------------------------------------- figures
def describe(bounds: dict[str, int | None]) -> str:
    f, p = bounds["filtering"], bounds["post_filtering"]
    parts = ["no filtering" if f is None else f"filtering from step {f}",
             "never post-filtering" if p is None else f"post-filtering from step {p}"]
    return ", ".join(parts)


def shade(ax: Any, bounds: dict[str, int | None], steps: int, label: bool = False) -> None:
    named = [("alignment", 0), ("filtering", bounds["filtering"]),
             ("post_filtering", bounds["post_filtering"])]
    starts = [(p, s) for p, s in named if s is not None]
    for i, (phase, s) in enumerate(starts):
        e = starts[i + 1][1] if i + 1 < len(starts) else steps
        if e > s:
            ax.axvspan(s + 1, e + 1, color=PHASE_COLOURS[phase], zorder=0,
                       label=phase.replace("_", "-") if label else None)
        if s > 0:
            ax.axvline(s + 1, color="0.3", lw=0.8, ls="--", zorder=1)


def plot_dynamics(runs: dict[str, Run], sens: dict[str, dict[str, Any]], data: Data,
                  path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bounds = runs["L2RW"].monitor.boundaries.__dict__
    steps = len(runs["L2RW"].clean_loss)
    x = np.arange(1, steps + 1)
    clean = data.true_clean.numpy()
    fig = plt.figure(figsize=(13, 8.5))
    grid = fig.add_gridspec(3, 2, width_ratios=[2.1, 1], hspace=0.12, wspace=0.28)
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[i, 0], sharex=axes[0]) for i in (1, 2)]
    style = {"L2RW": "-", "FBR": "--"}
    for name, run in runs.items():
        axes[0].plot(x, run.clean_loss, style[name], color="k", label=f"{name}")
        w = run.weights
        axes[1].plot(x, w[:, clean].mean(1), style[name], color="tab:blue",
                     label=f"{name}: clean samples")
        axes[1].plot(x, w[:, ~clean].mean(1), style[name], color="tab:red",
                     label=f"{name}: noisy samples")
        peak = float(np.max(run.coupling))
        axes[2].plot(x, run.coupling / peak, style[name], color="tab:purple",
                     label={"L2RW": "L2RW: mean |⟨∇ℓᵢ, ∇L_clean⟩| / peak",
                            "FBR": "FBR: mean |dᵢ| / peak"}[name])
    for ax in axes:
        shade(ax, bounds, steps, label=ax is axes[0])
        ax.set_xscale("log")
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    axes[0].set_ylabel("clean-subset loss")
    axes[1].set_ylabel("mean weight")
    axes[2].set_ylabel("coupling / its peak")
    axes[2].set_xlabel("step (log scale)")
    for ax in axes[:2]:
        plt.setp(ax.get_xticklabels(), visible=False)
    axes[0].legend(loc="lower left", fontsize=8, ncol=2)
    axes[1].legend(loc="upper left", fontsize=8, ncol=2)
    axes[2].legend(loc="lower left", fontsize=8)
    axes[0].set_title(f"Phases detected by PhaseMonitor (shaded: L2RW's)\nL2RW: {describe(bounds)}"
                      f"; FBR: {describe(runs['FBR'].monitor.boundaries.__dict__)}", fontsize=10)

    ax = fig.add_subplot(grid[:, 1])
    phases = [p for p in ("alignment", "filtering", "post_filtering") if p in sens["L2RW"]]
    width = 0.2
    bars = [("L2RW", "drop_one", "tab:purple", "L2RW, one clean sample dropped"),
            ("L2RW", "jitter", "plum", "L2RW, clean features jittered"),
            ("FBR", "drop_one", "tab:green", "FBR, one clean sample dropped"),
            ("FBR", "jitter", "yellowgreen", "FBR, clean features jittered")]
    for k, (lane, kind, colour, label) in enumerate(bars):
        pos = np.arange(len(phases)) + (k - 1.5) * width
        key = "tv_step_weights_mean" if kind == "drop_one" else "tv_step_weights"
        ax.bar(pos, [sens[lane][p][kind][key] for p in phases], width, color=colour,
               label=label + (" (bar: mean, dot: max)" if kind == "drop_one" else ""))
        if kind == "drop_one":
            ax.plot(pos, [sens[lane][p][kind]["tv_step_weights_max"] for p in phases], "o",
                    color=colour, ms=4, mec="k", mew=0.5)
    ax.set_yscale("log")
    ax.set_xticks(range(len(phases)), [f"{p.replace('_', '-')}\nstep {sens['L2RW'][p]['step']}"
                                       for p in phases])
    window = sens["L2RW"][phases[0]]["window"] if phases else 0
    ax.set_ylabel(f"TV distance of the per-step weights, {window} steps after the perturbation")
    ax.set_title("Perturbation sensitivity per phase\n(checkpoints in the L2RW phases)",
                 fontsize=10)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_trajectories(runs: dict[str, Run], data: Data, cfg: Config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(cfg.seed)
    clean = data.true_clean.numpy()
    picks = {True: rng.choice(np.flatnonzero(clean), cfg.n_traces, replace=False),
             False: rng.choice(np.flatnonzero(~clean), cfg.n_traces, replace=False)}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, (name, run) in zip(axes, runs.items(), strict=True):
        x = np.arange(1, run.weights.shape[0] + 1)
        for is_clean, idx in picks.items():
            colour = "tab:blue" if is_clean else "tab:red"
            for j, i in enumerate(idx):
                ax.plot(x, run.weights[:, i], color=colour, lw=0.9, alpha=0.7,
                        label=("clean" if is_clean else "noisy") + " samples" if j == 0 else None)
        shade(ax, run.monitor.boundaries.__dict__, len(x), label=True)
        ax.set_xscale("log")
        ax.set_xlabel("step (log scale)")
        ax.set_title(f"{name}: {describe(run.monitor.boundaries.__dict__)}", fontsize=10)
    axes[0].set_ylabel("weight")
    axes[0].legend(fontsize=8, loc="center left")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------------------------- main
def log_subsample(n: int, k: int = 120) -> list[int]:
    return sorted({int(i) for i in np.geomspace(1, n, k) - 1})


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.phases", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/phases", help="directory for JSON + figures")
    parser.add_argument("--figures-dir", default=None, help="put the PNGs here instead")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    for name, value in asdict(Config()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args(argv)
    overrides = SMOKE if args.smoke else {}
    cfg = Config(**{**asdict(Config()), **overrides,
                    **{k: v for k, v in vars(args).items() if k in asdict(Config()) and
                       v is not None}})
    torch.set_num_threads(1)  # the tensors are tiny: more threads only contend
    start = time.perf_counter()
    out_dir = Path(args.out)
    fig_dir = Path(args.figures_dir) if args.figures_dir else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)

    data = make_data(cfg)
    candidates = set(log_subsample(cfg.steps - cfg.window + 1, 60))
    runs = {name: train(name, data, cfg, candidates) for name in LANES}
    l2rw_bounds = asdict(runs["L2RW"].monitor.boundaries)
    def nearest_candidate(t: int) -> int:  # in log steps
        return min(candidates, key=lambda c: abs(math.log(c + 1) - math.log(t + 1)))

    ckpt = {p: nearest_candidate(t) for p, t in checkpoints(l2rw_bounds, cfg).items()}
    sens: dict[str, dict[str, Any]] = {name: {} for name in LANES}
    for name in LANES:
        for phase, t in ckpt.items():
            sens[name][phase] = sensitivity(runs[name], t, data, cfg)

    plot_dynamics(runs, sens, data, fig_dir / "phases_dynamics.png")
    plot_trajectories(runs, data, cfg, fig_dir / "phases_trajectories.png")
    elapsed = time.perf_counter() - start

    # Detection from the stored trajectory must agree with the online monitor.
    for name, run in runs.items():
        hist = run.monitor.to_dict()
        offline = detect_phases(hist["kept_fraction"], hist["clean_loss"], hist["coupling"])
        assert asdict(offline) == asdict(run.monitor.boundaries), name

    idx = log_subsample(cfg.steps)
    command = "python -m benchmarks.phases " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result: dict[str, Any] = {
        "command": command.strip(),
        "config": asdict(cfg),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "wall_seconds": round(elapsed, 2),
        "boundaries": {n: asdict(r.monitor.boundaries) for n, r in runs.items()},
        "post_filtering_warnings": {n: r.post_filtering_warnings for n, r in runs.items()},
        "checkpoints": ckpt,
        "sensitivity": {n: {p: {k: v for k, v in s.items() if k != "runs"}
                            for p, s in sens[n].items()} for n in LANES},
        "sensitivity_runs": {n: {p: s["runs"] for p, s in sens[n].items()} for n in LANES},
        "final": {n: {k: v for k, v in asdict(r.monitor.history[-1]).items()}
                  for n, r in runs.items()},
        "curves": {n: {"step": idx,
                       "clean_loss": r.clean_loss[idx].tolist(),
                       "coupling": r.coupling[idx].tolist(),
                       "mean_weight_clean": r.weights[idx][:, data.true_clean.numpy()]
                       .mean(1).tolist(),
                       "mean_weight_noisy": r.weights[idx][:, ~data.true_clean.numpy()]
                       .mean(1).tolist(),
                       **{k: [r.monitor.history[i].__dict__[k] for i in idx]
                          for k in ("kept_fraction", "effective_sample_size", "precision",
                                    "recall")}}
                   for n, r in runs.items()},
    }
    (out_dir / "phases.json").write_text(json.dumps(result, indent=1))
    print_summary(result, out_dir, fig_dir)
    return result


def print_summary(result: dict[str, Any], out_dir: Path, fig_dir: Path) -> None:
    print(f"phases: {result['wall_seconds']:.1f} s on {result['machine']['cpus']} CPU cores")
    for name, b in result["boundaries"].items():
        f = result["final"][name]
        print(f"  {name:4s}: {describe(b)} ({result['post_filtering_warnings'][name]} "
              f"PostFilteringWarning); final kept {f['kept_fraction']:.3f}, precision "
              f"{f['precision']:.3f}, recall {f['recall']:.3f}, clean loss {f['clean_loss']:.4f}")
    print("  perturbation sensitivity: TV distance of the per-step weights after the window "
          "(drop-one: mean / max over drops; jitter)")
    for name, per in result["sensitivity"].items():
        for phase, s in per.items():
            d, j = s["drop_one"], s["jitter"]
            print(f"    {name:4s} {phase:15s} step {s['step']:5d}: drop-one "
                  f"{d['tv_step_weights_mean']:.3g} / {d['tv_step_weights_max']:.3g}, jitter "
                  f"{j['tv_step_weights']:.3g}; top-3 clean share "
                  f"{s['clean_gradient_top3_share']:.2f}")
    print(f"  wrote {out_dir / 'phases.json'}, {fig_dir / 'phases_dynamics.png'}, "
          f"{fig_dir / 'phases_trajectories.png'}")
    print(f"  reproduce with: {result['command']}")


if __name__ == "__main__":
    main()
