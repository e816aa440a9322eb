"""FBR: feature-based reweighting (Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209), trained
with the authors' recipe through the public ``robustweights.SurrogateRecipe``.

``fbr`` is the authors' recipe as their public code runs it (GitHub
``yiz134/Feature_based_reweight``: ``trainer/train.py``, ``experiments.py``), item by item:

- every epoch, from epoch 0 (warm-up included): ``clean_passes`` (30) passes of plain mean CE
  over the clean subset, batch 128, un-augmented, with the pool's optimizer and learning rate;
- then the clean subset's features in eval mode, un-augmented, as FBR's clean prototypes;
- for every pool batch (augmented as every method's), its features from a separate no-grad
  eval-mode forward of the same augmented batch; the training forward in train mode;
- every pool weight 0.5 for ``warmup`` epochs, then FBR's weights recomputed for each batch
  (w0 = 0.5, w_max = 1, weights <= 0.5 set to 0);
- alpha = 1/(C-1) before ``alpha_switch``, then 0; the presets put the switch on the first
  learning-rate drop, as the authors' 40 of 150 is;
- loss: the batch mean of w_i CE(z_i, y_i), weights detached.

Remaining deviations, and why: the backbone, data size and run length are the preset's (a
width-16 CNN, 4,920 + 250 images and 80 epochs on the cpu preset, for 2 CPU cores), so the
warm-up (10 of 150) becomes 5 and the LR milestones are the preset's shared ones (every method
trains under the same schedule); the clean set is the benchmark's trusted subset (250 images
on the cpu preset, 2,000 in the paper); weight decay is the preset's (5e-4 on cpu, the authors'
1e-3 on ``paper``). The clean passes' batch order comes from its own seeded generator.

``fbr_plus`` (:class:`FBRPlus`) is the recommended recipe, the same in every preset: the options
of ``SurrogateRecipe`` that the selections on held-out seeds kept (``docs/results/
recipe_selection``), trained with mixup and with the trusted images in the pool's batches.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method, check_gce, mixed_batch_loss
from benchmarks.cifar_n.models import head
from robustweights import AlphaSchedule, SurrogateRecipe, SurrogateReweighter
from robustweights._data import eval_mode
from robustweights._validation import (
    check_fraction,
    check_nonneg_float,
    check_nonneg_int,
    check_positive_float,
    check_positive_int,
)
from robustweights.recipe import (
    PredictionAverage,
    Targets,
    consistency_loss,
    elr_penalty,
    mixup,
    prior_penalty,
    soft_cross_entropy,
)

__all__ = ["FBR", "FBRPlus"]


def _doubt(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's largest softmax probability of a class other than its label (B,): what the
    confident gate compares with its bar."""
    others = logits.softmax(1).scatter(1, labels.to(logits.device)[:, None], 0.0)
    return others.max(1).values


class FBR(Method):
    """FBR with the authors' training recipe (see the module docstring), plus the options of
    ``SurrogateRecipe`` and two feature sources other than the trained network.

    Params beyond the authors' recipe: ``dropped_weight``, ``smoothing``,
    ``drop_rate`` (None: the threshold rule; a fraction, or
    ``"nominal"`` for the noise type's nominal rate, as Co-teaching is given), ``drop_ramp``
    (epochs of the drop-rate ramp), ``class_balanced``, ``calibration_holdout`` (that many
    trusted images, the same number per class, are held out of the clean set to calibrate the
    per-class thresholds), ``health_holdout`` (that many trusted
    images, drawn at random, are held out of the recipe's clean set and only score the filter's
    health each epoch; 0: none), ``mode`` (the reweighter's
    ``"recompute"`` or ``"incremental"``), and ``features``: ``"self"`` (the trained network's,
    the authors'), ``"ema"`` (an exponential moving average of it, decay ``ema_decay``, buffers
    averaged too) or ``"peer"`` (two networks; each one's pool weights come from the *other*
    one's features and prototypes, a two-network exchange at twice the cost; network 0 is
    reported), and ``loss_norm``: ``"batch"`` (the authors': the weighted losses summed and
    divided by the batch size) or ``"weights"`` (divided by the batch's sum of weights instead,
    as Co-teaching averages over the samples it keeps: the pool's step size does not shrink
    with the kept fraction), ``elr`` (:math:`\\lambda` of early-learning regularisation over
    the pool batches, every sample unweighted; 0: off) with ``elr_momentum`` (its
    :math:`\\beta`) and ``elr_start`` (the first epoch the term counts; the running targets
    are updated from epoch 0), its running targets updated from the eval forward's predictions
    of the un-mixed batch and mixed with the same draw as the labels; ``gce``
    (:math:`\\rho > 0`, with mixup: the pool term is generalised cross-entropy,
    ``methods.base.soft_gce``, instead of cross-entropy; the clean passes keep cross-entropy),
    ``floor_until`` (an epoch: from it on, a dropped sample that took no pseudo-label has
    weight 0, the authors' drop, instead of ``dropped_weight``; None: never), ``floor_gate``
    (``"agree"``: a dropped sample that took no pseudo-label keeps ``dropped_weight`` only where
    the eval forward's class of its un-mixed image is its given label, else weight 0;
    ``"confident"``: such a sample gets weight 0 only where the eval forward gives some class
    other than its label a probability of at least ``floor_gate_confidence``; None: the floor for
    every such sample), ``floor_gate_quantile`` (:math:`q`, with the confident gate and
    ``trusted_in_batches``: each epoch's bar is the :math:`1-q` quantile of the trusted images'
    largest other-class probabilities at the epoch's start, at least ``floor_gate_confidence``;
    None: the fixed bar), ``floor_gate_start`` (the first epoch either gate applies; 0: from
    the first) and ``floor_gate_end`` (the first epoch it no longer applies; None: never),
    ``dropped_doubt`` and ``dropped_doubt_until`` (``RecipeConfig``'s doubt gate, inside
    ``SurrogateRecipe.targets``: the confident gate at that bar before that epoch; None: off,
    every epoch), ``floor_gate_when`` (None: the gate in every epoch; ``"agreement"``:
    either gate only in an epoch after one whose health report (``health_holdout`` > 0) found
    the pool's agreement with its labels above the held-out accuracy),
    ``trusted_in_batches`` (with mixup and ``clean_passes`` = 0: the trusted images join the
    pool's batches, one shuffled stream over both as CE + mixup's, at weight :math:`w_{\\max}`
    and never scored, and are mixed with the pool images; the prototypes still come from their
    eval-mode features at the start of every epoch; one network, no ELR; images held out by
    ``calibration_holdout`` or ``health_holdout`` are neither trained on nor in the prototypes),
    ``consistency`` (:math:`\\lambda`, with ``trusted_in_batches``: adds
    :math:`\\lambda r\\,` :func:`~robustweights.recipe.consistency_loss` between the training
    forward of a second augmented view of the batch's dropped samples that took no pseudo-label
    and the eval forward's guess for them, sharpened by ``consistency_temperature``; :math:`r`
    ramps linearly to 1 over ``pseudo_ramp`` epochs; 0: off), ``consistency_prior`` (with
    ``consistency``: adds :func:`~robustweights.recipe.prior_penalty` of the batch's training
    forward, DivideMix's guard against a one-class collapse), ``consistency_guess`` (``"eval"``:
    the guess is the eval forward's, as above; ``"train"``: a no-grad train-mode forward of the
    dropped images' first view, as DivideMix guesses), ``trusted_repeat`` (with
    ``trusted_in_batches``: each trusted image is drawn that many times per epoch, each draw
    its own augmentation and mixing partner; 1: once, as CE + mixup's stream).
    """

    name = "fbr"
    selects = True

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"warmup": 10, "warmup_weight": None, "clean_passes": 30, "alpha_switch": 40,
                "eval_features": True, "dropped_weight": 0.0, "smoothing": 0.0,
                "drop_rate": None, "drop_ramp": 10, "class_balanced": False,
                "mode": "recompute", "features": "self", "ema_decay": 0.999,
                "health_holdout": 0, "noise_rate": 0.2, "loss_norm": "batch",
                "thresholds": "global", "calibration_quantile": 0.2, "pseudo_labels": False,
                "pseudo_confidence": 0.95, "pseudo_ramp": 10, "mixup": 0.0,
                "calibration_holdout": 0, "dropped_target": "label", "bootstrap_share": 0.8,
                "bootstrap_start": 0, "elr": 0.0, "elr_momentum": 0.7, "elr_start": 0,
                "gce": 0.0, "floor_until": None, "floor_gate": None,
                "floor_gate_confidence": 0.5, "floor_gate_quantile": None,
                "floor_gate_start": 0, "floor_gate_end": None,
                "dropped_doubt": None, "dropped_doubt_until": None,
                "floor_gate_when": None,
                "trusted_in_batches": False, "consistency": 0.0,
                "consistency_temperature": 0.5, "consistency_prior": False,
                "consistency_guess": "eval", "trusted_repeat": 1}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        p = self.params
        if p["features"] not in ("self", "ema", "peer"):
            raise ValueError(f"Expected `features` to be 'self', 'ema' or 'peer', but got "
                             f"{p['features']!r}")
        if p["loss_norm"] not in ("batch", "weights"):
            raise ValueError(f"Expected `loss_norm` to be 'batch' or 'weights', but got "
                             f"{p['loss_norm']!r}")
        if p["features"] != "self" and not p["eval_features"]:
            raise ValueError("Expected `eval_features` with features from another network "
                             f"({p['features']!r}): the training forward is the trained one's")
        self.gce = check_gce(p)
        until = p["floor_until"]
        if until is not None and (isinstance(until, bool) or not isinstance(until, int)
                                  or until < 0):
            raise ValueError(f"Expected `floor_until` to be None or an epoch (an int >= 0), but "
                             f"got {until!r}")
        if p["floor_gate"] not in (None, "agree", "confident"):
            raise ValueError(f"Expected `floor_gate` to be None, 'agree' or 'confident', but "
                             f"got {p['floor_gate']!r}")
        check_fraction(p["floor_gate_confidence"], "floor_gate_confidence")
        check_nonneg_int(p["floor_gate_start"], "floor_gate_start")
        if p["floor_gate_start"] and p["floor_gate"] is None:
            raise ValueError("Expected a `floor_gate` with `floor_gate_start` > 0: there is no "
                             "gate to start")
        if p["floor_gate_end"] is not None:
            end = check_nonneg_int(p["floor_gate_end"], "floor_gate_end")
            if p["floor_gate"] is None or end <= int(p["floor_gate_start"]):
                raise ValueError(f"Expected a `floor_gate` and `floor_gate_end` after "
                                 f"`floor_gate_start` ({p['floor_gate_start']}), but got "
                                 f"floor_gate={p['floor_gate']!r}, floor_gate_end={end}")
        if p["floor_gate_quantile"] is not None:
            check_fraction(p["floor_gate_quantile"], "floor_gate_quantile")
            if p["floor_gate"] != "confident" or not p["trusted_in_batches"]:
                raise ValueError("Expected `floor_gate='confident'` and `trusted_in_batches` with "
                                 "`floor_gate_quantile`: it sets that gate's bar from the trusted "
                                 "images the network trains on")
        self.gate_bar = float(p["floor_gate_confidence"])  # the confident gate's bar this epoch
        self.gate_log: dict[str, float] = {}
        if p["floor_gate_when"] not in (None, "agreement"):
            raise ValueError(f"Expected `floor_gate_when` to be None or 'agreement', but got "
                             f"{p['floor_gate_when']!r}")
        if p["floor_gate_when"] is not None and (p["floor_gate"] is None
                                                 or not int(p["health_holdout"])):
            raise ValueError("Expected `floor_gate` and `health_holdout` > 0 with "
                             "`floor_gate_when`: it switches the gate by the health report")
        self.gate_on = p["floor_gate_when"] is None  # switched by each epoch's health report
        if p["floor_gate"] is not None and not p["eval_features"]:
            raise ValueError("Expected `eval_features` with `floor_gate`: the gate reads the "
                             "eval forward's class of the un-mixed batch")
        if float(p["mixup"]) > 0 and not p["eval_features"]:
            raise ValueError("Expected `eval_features` with `mixup`: the training forward sees "
                             "mixed images, so the batch's own features need the eval forward")
        if p["trusted_in_batches"]:
            self._check_trusted_in_batches()
        check_nonneg_float(p["consistency"], "consistency")
        check_positive_float(p["consistency_temperature"], "consistency_temperature")
        if not isinstance(p["consistency_prior"], bool):
            raise ValueError(f"Expected `consistency_prior` to be a bool, but got "
                             f"{p['consistency_prior']!r}")
        if p["consistency_guess"] not in ("eval", "train"):
            raise ValueError(f"Expected `consistency_guess` to be 'eval' or 'train', but got "
                             f"{p['consistency_guess']!r}")
        if float(p["consistency"]) > 0 and not p["trusted_in_batches"]:
            raise ValueError("Expected `trusted_in_batches` with `consistency` > 0 (the term is "
                             "built into that loop only)")
        self.repeat = check_positive_int(p["trusted_repeat"], "trusted_repeat")
        if self.repeat > 1 and not p["trusted_in_batches"]:
            raise ValueError("Expected `trusted_in_batches` with `trusted_repeat` > 1 (the clean "
                             "passes set their own count)")
        self.model = ctx.new_model()
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)
        self.nets, self.opts, self.scheds = [self.model], [self.opt], [self.sched]
        self.teacher: AveragedModel | None = None
        if p["features"] == "peer":
            self.nets.append(ctx.new_model())
            self.opts.append(ctx.new_optimizer(self.nets[1]))
            self.scheds.append(ctx.new_scheduler(self.opts[1]))
            scorers: list[nn.Module] = [self.nets[1], self.nets[0]]  # each net's peer
        elif p["features"] == "ema":
            self.teacher = AveragedModel(self.model, use_buffers=True,
                                         multi_avg_fn=get_ema_multi_avg_fn(p["ema_decay"]))
            scorers = [self.teacher]
        else:
            scorers = [self.model]
        k_out = int(p["health_holdout"])
        order = torch.randperm(ctx.n_clean, generator=torch.Generator().manual_seed(ctx.seed + 31))
        order = order.to(ctx.clean_y.device)
        x, y = ctx.memory_format(ctx.clean_x), ctx.clean_y
        self.clean = (x[order[k_out:]], y[order[k_out:]]) if k_out else (x, y)
        self.held = (x[order[:k_out]], y[order[:k_out]]) if k_out else None
        self.calib = None
        holdout = check_nonneg_int(p["calibration_holdout"], "calibration_holdout")
        per_class = holdout // ctx.num_classes
        if holdout and not per_class:  # it would hold nothing out, silently
            raise ValueError(f"Expected `calibration_holdout` to be 0 or at least the number of "
                             f"classes ({ctx.num_classes}), but got {holdout}")
        if per_class:  # the same number of trusted images of every class, never trained on
            if k_out:
                raise ValueError("Expected `health_holdout` = 0 with `calibration_holdout`")
            yo = y[order]
            rank = torch.stack([(yo[: i + 1] == yo[i]).sum() for i in range(len(yo))]) - 1
            out = order[rank < per_class]
            keep = order[rank >= per_class]
            self.clean, self.calib = (x[keep], y[keep]), (x[out], y[out])
        self.recipes = [self._recipe(ctx, scorer, k) for k, scorer in enumerate(scorers)]
        self.recipe = self.recipes[0]
        self.elr = [PredictionAverage(ctx.num_classes, momentum=float(p["elr_momentum"]))
                    for _ in self.nets] if float(p["elr"]) > 0 else None

    def _check_trusted_in_batches(self) -> None:
        p = self.params
        if not isinstance(p["trusted_in_batches"], bool):
            raise ValueError(f"Expected `trusted_in_batches` to be a bool, but got "
                             f"{p['trusted_in_batches']!r}")
        wrong = {"mixup": float(p["mixup"]) <= 0, "clean_passes": int(p["clean_passes"]) != 0,
                 "features": p["features"] == "peer", "elr": float(p["elr"]) > 0}
        bad = [name for name, is_bad in wrong.items() if is_bad]
        if bad:
            raise ValueError(f"Expected `trusted_in_batches` with `mixup` > 0, `clean_passes` = "
                             f"0, one network and no `elr`, but got "
                             f"{', '.join(f'{b}={p[b]!r}' for b in bad)}")

    def _recipe(self, ctx: Context, scorer: nn.Module, k: int) -> SurrogateRecipe:
        p = self.params
        rate = p["drop_rate"]
        if rate == "nominal":
            rate = float(p["noise_rate"])
        inner = scorer.module if isinstance(scorer, AveragedModel) else scorer
        reweighter = SurrogateReweighter(ctx.num_classes, mode=p["mode"],
                                         alpha=AlphaSchedule(ctx.num_classes,
                                                             int(p["alpha_switch"])))
        return SurrogateRecipe(
            ctx.num_classes, model=scorer, head=head(inner),
            clean_data=self.clean, health_data=self.held, calibration_data=self.calib,
            warmup_epochs=int(p["warmup"]),
            warmup_weight=None if p["warmup_weight"] is None else float(p["warmup_weight"]),
            alpha_switch=int(p["alpha_switch"]),
            clean_passes=int(p["clean_passes"]), clean_batch_size=ctx.config.batch_size,
            eval_features=bool(p["eval_features"]), dropped_weight=float(p["dropped_weight"]),
            smoothing=float(p["smoothing"]),
            drop_rate=None if rate is None else float(rate), drop_ramp_epochs=int(p["drop_ramp"]),
            class_balanced=bool(p["class_balanced"]), reweighter=reweighter,
            thresholds=str(p["thresholds"]),
            calibration_quantile=float(p["calibration_quantile"]),
            pseudo_labels=bool(p["pseudo_labels"]),
            pseudo_confidence=float(p["pseudo_confidence"]),
            pseudo_ramp_epochs=int(p["pseudo_ramp"]),
            dropped_target=str(p["dropped_target"]),
            bootstrap_share=float(p["bootstrap_share"]),
            bootstrap_start=int(p["bootstrap_start"]),
            dropped_doubt=p["dropped_doubt"], dropped_doubt_until=p["dropped_doubt_until"],
            generator=torch.Generator().manual_seed(ctx.seed + 7919 + 104729 * k))

    def _step(self, k: int, loss: torch.Tensor) -> None:
        self.sgd_step(self.opts[k], loss)
        if self.teacher is not None:
            self.teacher.update_parameters(self.model)

    def _loss(self, recipe: SurrogateRecipe, logits: torch.Tensor, t: Targets) -> torch.Tensor:
        """The weighted loss of the batch: on soft targets when some are bootstrapped."""
        if t.guess is None:
            return recipe.loss(logits, t.labels, t.weights)
        return soft_cross_entropy(logits, t.soft_targets(self.c.num_classes), t.weights)

    def _end_floor(self, recipe: SurrogateRecipe, t: Targets, w: torch.Tensor, epoch: int
                   ) -> tuple[Targets, torch.Tensor]:
        """``t`` and the batch's weights ``w`` with weight 0 for the dropped samples no
        pseudo-label took: all of them from epoch ``floor_until`` on, with ``floor_gate="agree"``
        those whose eval-forward class is not their given label, with ``"confident"`` those
        whose eval forward gives another class at least ``floor_gate_confidence`` (unchanged
        otherwise, and in the warm-up)."""
        until, gate = self.params["floor_until"], self.params["floor_gate"]
        keep = (t.kept | t.pseudo).to(w.device)
        if until is not None and epoch >= until:
            pass
        elif (gate is not None and self.gate_on and not recipe.in_warmup
              and self._gate_epoch(epoch)):
            z = recipe.eval_logits
            assert z is not None  # eval_features is checked in setup
            if gate == "agree":
                keep = keep | (z.argmax(1).to(w.device) == t.labels.to(w.device))
            else:  # "confident": the floor goes only where another class is likely
                keep = keep | ~(_doubt(z, t.labels) >= self.gate_bar).to(w.device)
        else:
            return t, w
        return (replace(t, weights=torch.where(keep, t.weights, torch.zeros_like(t.weights))),
                torch.where(keep, w, torch.zeros_like(w)))

    def _gate_epoch(self, epoch: int) -> bool:
        """Whether ``epoch`` is in the gate's window [``floor_gate_start``, ``floor_gate_end``)."""
        end = self.params["floor_gate_end"]
        return int(self.params["floor_gate_start"]) <= epoch and (end is None or epoch < end)

    @torch.no_grad()
    def _set_gate_bar(self) -> None:
        """The confident gate's bar for this epoch, and its log: each trusted image's *doubt*
        (the largest probability the eval forward gives a class other than its label) at the
        epoch's start; with ``floor_gate_quantile`` :math:`q` the bar is the :math:`1 - q`
        quantile of those doubts, at least ``floor_gate_confidence``, so that the gate would
        take the floor from at most a share :math:`q` of the correctly labelled images the
        network fits as well as its trusted ones."""
        x, y = self.clean
        scorer = self.teacher if self.teacher is not None else self.model  # what the gate reads
        z = self.c.predict(scorer, x)[0]
        doubt = _doubt(z, y).float()
        levels = (0.8, 0.9, 0.95)
        quantiles = torch.quantile(doubt, torch.tensor(levels, device=doubt.device)).tolist()
        q = self.params["floor_gate_quantile"]
        floor = float(self.params["floor_gate_confidence"])
        self.gate_bar = floor if q is None else max(
            floor, float(torch.quantile(doubt, 1.0 - float(q))))
        self.gate_log = {"gate_bar": self.gate_bar,
                         **{f"trusted_doubt_q{round(100 * lv)}": v
                            for lv, v in zip(levels, quantiles, strict=True)}}

    def _elr_source(self, k: int, x: torch.Tensor, train: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """Net ``k``'s prediction of the batch for ELR's running targets: the recipe's eval
        forward where it ran, else the training forward's (``train``) or a no-grad eval one."""
        z = self.recipes[k].eval_logits
        if z is not None:
            return z
        if train is not None:
            return train.detach()
        with torch.no_grad(), eval_mode(self.nets[k]):
            return self.nets[k](x)

    def _trusted_in_batches_epoch(self, epoch: int) -> EpochLog:
        """One epoch over the pool and the trusted images as one shuffled stream (CE + mixup's
        training set): the pool part of each batch weighted and targeted by the recipe, the
        trusted part at :math:`w_{\\max}` under its labels, all of it mixed together."""
        c, recipe = self.c, self.recipe
        recipe.start_epoch(epoch)
        recipe.refresh_prototypes()  # what clean_batches() does with no pass
        if self.params["floor_gate"] == "confident":
            self._set_gate_bar()
        # the pool, then the trusted images the recipe trains on (without any held out to
        # calibrate the thresholds): c.union() when none is held out
        ux, uy = torch.cat([c.pool_x, self.clean[0]]), torch.cat([c.pool_y, self.clean[1]])
        weights = np.full(c.n_pool, np.nan)
        pseudo = np.full(c.n_pool, -1, dtype=np.int64)
        kept = np.full(c.n_pool, np.nan)
        total, n = 0.0, 0
        couplings: list[float] = []
        lam = float(self.params["consistency"]) * min(1.0, (epoch + 1) / max(
            1, int(self.params["pseudo_ramp"])))
        for idx in c.union_batches(c.n_pool, len(self.clean[1]), self.repeat):
            x, y = c.train_view(ux[idx]), uy[idx]
            second: tuple[torch.Tensor, torch.Tensor] | None = None
            q = torch.nn.functional.one_hot(y, c.num_classes).float()
            w_all = torch.full((len(y),), recipe.reweighter.w_max, device=y.device)
            pool = idx < c.n_pool
            if bool(pool.any()):
                w = recipe.weights(inputs=x[pool], labels=y[pool], sample_ids=idx[pool])
                t, w = self._end_floor(recipe, recipe.targets(y[pool], w), w, epoch)
                q[pool] = t.soft_targets(c.num_classes).to(q.device)
                w_all[pool] = t.weights.to(w_all.device)
                self._record(idx[pool], w, t, weights, pseudo, kept)
                d = recipe.reweighter.last_scores
                if not recipe.in_warmup and d is not None:
                    couplings.append(float(d.abs().mean()))
                dropped = ~(t.kept | t.pseudo).to(y.device)
                if lam > 0 and not recipe.in_warmup and bool(dropped.any()):
                    # a second view of the dropped images, towards the network's guess
                    if self.params["consistency_guess"] == "train":  # DivideMix's: train mode
                        with torch.no_grad():
                            guess = self.model(x[pool][dropped])
                    else:
                        z_eval = recipe.eval_logits
                        assert z_eval is not None  # eval_features: checked in setup
                        guess = z_eval[dropped]
                    second = (c.train_view(ux[idx[pool][dropped]]), guess)
            xm, qm, wm = mixup(x, q, w_all, num_classes=c.num_classes,
                               alpha=float(self.params["mixup"]), generator=c.generator)
            # "weights": sum w l / sum w, so that the step does not shrink with the weights
            norm = (len(wm) / wm.detach().sum().clamp_min(1e-12)
                    if self.params["loss_norm"] == "weights" else 1.0)
            if second is None:
                z = self.model(xm)
                loss = norm * mixed_batch_loss(z, qm, wm, self.gce)
            else:  # one forward over both, so that BatchNorm sees one batch
                z = self.model(torch.cat([xm, second[0]]))
                loss = norm * mixed_batch_loss(z[:len(xm)], qm, wm, self.gce) + \
                    lam * consistency_loss(z[len(xm):], second[1], temperature=float(
                        self.params["consistency_temperature"]))
            if lam > 0 and self.params["consistency_prior"]:
                loss = loss + prior_penalty(z)
            self._step(0, loss)
            total, n = total + float(loss.detach()) * len(idx), n + len(idx)
        return self._close_epoch(total / n, weights, pseudo, kept, couplings, float("nan"))

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        if self.params["trusted_in_batches"]:
            return self._trusted_in_batches_epoch(epoch)
        for net in self.nets:
            net.train()
        clean_total, clean_n = 0.0, 0
        for k, recipe in enumerate(self.recipes):  # each trained net runs its own clean passes
            recipe.start_epoch(epoch)
            for xc, yc in recipe.clean_batches():
                loss = recipe.clean_loss(self.nets[k](xc), yc)
                self._step(k, loss)
                if k == 0:
                    clean_total, clean_n = clean_total + float(loss.detach()) * len(yc), \
                        clean_n + len(yc)
        if len(self.recipes) > 1:  # the peer exchange: each scores the other, trained since
            for recipe in self.recipes:
                recipe.refresh_prototypes()
        weights = np.full(c.n_pool, np.nan)
        pseudo = np.full(c.n_pool, -1, dtype=np.int64)
        kept = np.full(c.n_pool, np.nan)
        mix = float(self.params["mixup"])
        lam = float(self.params["elr"]) if epoch >= int(self.params["elr_start"]) else 0.0
        total, n = 0.0, 0
        couplings: list[float] = []
        for idx in c.batches(c.n_pool):
            x, y = c.train_view(c.pool_x[idx]), c.pool_y[idx]
            for k, recipe in enumerate(self.recipes):
                if mix > 0:  # targets from the un-mixed batch's eval forward, then mixup
                    w = recipe.weights(inputs=x, labels=y, sample_ids=idx)
                    t, w = self._end_floor(recipe, recipe.targets(y, w), w, epoch)
                    q = t.soft_targets(c.num_classes)
                    if self.elr is not None:  # ELR's running targets beside them: one draw
                        avg = self.elr[k].update(idx, self._elr_source(k, x))
                        q = torch.cat([q, avg.to(q.device)], 1)
                    xm, qm, wm = mixup(x, q, t.weights, num_classes=q.shape[1], alpha=mix,
                                       generator=c.generator)
                    logits = self.nets[k](xm)
                    loss = mixed_batch_loss(logits, qm[:, :c.num_classes], wm, self.gce)
                    if self.elr is not None:
                        loss = loss + lam * elr_penalty(logits, qm[:, c.num_classes:])
                elif recipe.config.eval_features:  # the eval forward, then the training one
                    w = recipe.weights(inputs=x, labels=y, sample_ids=idx)
                    logits = self.nets[k](x)
                    t, w = self._end_floor(recipe, recipe.targets(y, w), w, epoch)
                    loss = self._loss(recipe, logits, t)
                else:  # the training forward's features: forward first
                    logits = self.nets[k](x)
                    w = recipe.weights(inputs=x, labels=y, sample_ids=idx)
                    t = recipe.targets(y, w, logits=logits.detach())
                    t, w = self._end_floor(recipe, t, w, epoch)
                    loss = self._loss(recipe, logits, t)
                if self.elr is not None and mix == 0:
                    avg = self.elr[k].update(idx, self._elr_source(k, x, logits))
                    loss = loss + lam * elr_penalty(logits, avg)
                if self.params["loss_norm"] == "weights":  # sum w l / sum w, not / B
                    loss = loss * len(y) / w.detach().sum().clamp_min(1e-12)
                self._step(k, loss)
                if k == 0:
                    total, n = total + float(loss.detach()) * len(idx), n + len(idx)
                    self._record(idx, w, t, weights, pseudo, kept)
            d = self.recipe.reweighter.last_scores
            if not self.recipe.in_warmup and d is not None:
                couplings.append(float(d.abs().mean()))  # mean |d_i|, for the phase rule
        return self._close_epoch(total / n, weights, pseudo, kept, couplings,
                                 clean_total / clean_n if clean_n else float("nan"))

    @staticmethod
    def _record(idx: torch.Tensor, w: torch.Tensor, t: Targets, weights: np.ndarray,
                pseudo: np.ndarray, kept: np.ndarray) -> None:
        """Write a batch's weights, relabelled classes (pseudo-labels, or the guess of a
        bootstrapped target; -1 for none) and the filter's verdicts at its pool ids ``idx``."""
        ids = idx.cpu().numpy()
        weights[ids] = w.detach().cpu().numpy()
        relabelled = torch.where(t.pseudo, t.labels, -1)
        if t.guess is not None and t.guess_share is not None:  # bootstrapped
            moved = (t.guess_share > 0) & (t.guess != t.labels)
            relabelled = torch.where(moved, t.guess, relabelled)
        pseudo[ids] = relabelled.cpu().numpy()
        kept[ids] = t.kept.float().cpu().numpy()

    def _close_epoch(self, loss: float, weights: np.ndarray, pseudo: np.ndarray,
                     kept: np.ndarray, couplings: list[float], clean_pass_loss: float
                     ) -> EpochLog:
        """Step the schedulers, end every recipe's epoch and log it (network 0's)."""
        for sched in self.scheds:
            sched.step()
        recipe = self.recipe
        p_on = bool(self.params["pseudo_labels"]) or self.params["dropped_target"] != "label"
        report = recipe.end_epoch()
        health = {f"health_{k}": float("nan") if v is None else float(v)
                  for k, v in asdict(report).items() if k != "epoch"}
        if self.params["floor_gate_when"] == "agreement":  # the next epoch's gate
            self.gate_on = (report.pool_agreement is not None and report.heldout_accuracy
                            is not None and report.pool_agreement > report.heldout_accuracy)
        for r in self.recipes[1:]:
            r.end_epoch()
        floor = float(self.params["dropped_weight"]) > 0
        return EpochLog(loss, weights, pseudo_labels=pseudo if p_on else None,
                        kept=kept if floor else None, extra=
                        {"alpha": recipe.reweighter.current_alpha(),
                         "clean_pass_loss": clean_pass_loss,
                         "warmup": float(recipe.in_warmup),
                         "coupling": float(np.mean(couplings)) if couplings else float("nan"),
                         **health, **self.gate_log})

    def feature_directions(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """FBR's directions with alpha = 0 of images ``x`` under ``labels`` against the current
        prototypes (eval-mode features of the scoring network), for the runner's diagnosis:
        positive exactly when the label is the nearest prototype's class. None in the warm-up
        (no prototypes are in use)."""
        if self.recipe.in_warmup:
            return None
        c = self.c
        return torch.cat([self.recipe.directions(inputs=c.memory_format(xb), labels=yb,
                                                 alpha=0.0)
                          for xb, yb in zip(x.split(c.config.eval_batch_size),
                                            labels.split(c.config.eval_batch_size),
                                            strict=True)])

    def eval_model(self) -> nn.Module:
        return self.model


class FBRPlus(FBR):
    """The recommended FBR recipe (``RecipeConfig()`` with mixup in the loop), chosen on held-out
    seeds 10-12 by rules written before the runs (``docs/results/recipe_selection/``): the
    authors' threshold from epoch 0 (no warm-up, alpha 0), the trusted images in the pool's
    mixed batches at weight 1 (no clean passes), each batch's features from an eval-mode forward,
    a dropped sample trained towards its pseudo-label where the nearest clean prototype and the
    network agree at p >= 0.95, else at weight 0.5 under its given label, or at weight 0 while
    the network gives another class p >= 0.7 before the first learning-rate drop (epoch 40: the
    doubt gate), and mixup (alpha 1) among the batch's samples, weights mixed alike."""

    name = "fbr_plus"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {**super().defaults(), "warmup": 0, "alpha_switch": 0, "clean_passes": 0,
                "eval_features": True, "dropped_weight": 0.5, "pseudo_labels": True,
                "mixup": 1.0, "trusted_in_batches": True, "dropped_doubt": 0.7,
                "dropped_doubt_until": 40}
