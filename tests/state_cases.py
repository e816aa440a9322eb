"""Every stateful class, as a case for the checkpoint contract test (``tests/test_state.py``).

A case builds a fresh object with fixed configuration (``make``) and runs one deterministic step
(``step(obj, t)``, returning a tensor). Clean data is given at step 0 only, the epoch advances
and per-sample memory accumulates, so a step after a restore depends on the restored state.
Kept importable on its own: the contract test restores in a fresh Python process.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from robustweights import (
    AlphaSchedule,
    MetaReweighter,
    ModelMetaReweighter,
    PhaseMonitor,
    SurrogateRecipe,
    SurrogateReweighter,
)
from robustweights.recipe import PredictionAverage, elr_penalty, soft_cross_entropy

C, D, B, M = 4, 6, 12, 20
N_STEPS, SPLIT = 6, 3  # save after SPLIT steps, compare the remaining ones
CE = nn.CrossEntropyLoss(reduction="none")


def _data(t: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + t)
    centres = torch.randn(C, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    y = torch.randint(0, C, (B,), generator=g)
    noisy = torch.where(torch.rand(B, generator=g) < 0.3, torch.randint(0, C, (B,), generator=g),
                        y)
    yc = torch.arange(M) % C
    return {"features": centres[y] + torch.randn(B, D, generator=g, dtype=torch.float64),
            "labels": noisy,
            "ids": torch.randperm(2 * B, generator=g)[:B],  # ids recur across steps
            "clean_features": centres[yc] + torch.randn(M, D, generator=g, dtype=torch.float64),
            "clean_labels": yc}


def _head() -> nn.Linear:
    torch.manual_seed(3)
    return nn.Linear(D, C).double()


def _net() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, C)).double()


@dataclass
class Case:
    make: Callable[[], Any]
    step: Callable[[Any, int], torch.Tensor]
    #: the library object inside what ``make`` returns (a recipe run also holds a model)
    own: Callable[[Any], Any] = lambda obj: obj


def _fbr_step(rw: SurrogateReweighter, t: int) -> torch.Tensor:
    d = _data(t)
    if t == 0:
        rw.set_clean(features=d["clean_features"], labels=d["clean_labels"])
    rw.set_epoch(rw.epoch + 1)  # the restored epoch decides alpha (switch at epoch 4)
    ids = d["ids"] if rw.mode == "incremental" else None
    return rw.weights(features=d["features"], labels=d["labels"], sample_ids=ids)


def _l2rw_step(rw: MetaReweighter, t: int) -> torch.Tensor:
    d, head = _data(t), _head()
    with torch.no_grad():
        if t == 0:
            rw.set_clean(logits=head(d["clean_features"]), features=d["clean_features"],
                         labels=d["clean_labels"])
        return rw.weights(logits=head(d["features"]), features=d["features"], labels=d["labels"])


def _model_step(rw: ModelMetaReweighter, t: int) -> torch.Tensor:
    d = _data(t)
    if t == 0:
        rw.set_clean(inputs=d["clean_features"], labels=d["clean_labels"])
    return rw.weights(inputs=d["features"], labels=d["labels"])


_LOSSES = [1.0, 0.7, 0.05, 0.04, 0.5, 0.03]  # post-filtering (and freezing) at step 2


def _monitor_step(mon: PhaseMonitor, t: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(t)
    ids = torch.randperm(2 * B, generator=g)[:B]
    w = torch.rand(B, generator=g, dtype=torch.float64) * (torch.rand(B, generator=g) > 0.3)
    report = mon.update(w, clean_loss=_LOSSES[t], sample_ids=ids)
    fresh = torch.rand(B, generator=g, dtype=torch.float64)
    phase = ("alignment", "filtering", "post_filtering").index(report.phase)
    summary = torch.tensor([phase, report.kept_fraction, report.effective_sample_size,
                            float(mon.frozen), len(mon.history)], dtype=torch.float64)
    return torch.cat([mon.weights_to_use(fresh, sample_ids=ids), summary])


class RecipeRun:
    """A training run with SurrogateRecipe, checkpointed as a user would: the model and optimizer
    through their own state dicts, the recipe through its own (it leaves them out)."""

    def __init__(self) -> None:
        self.model = _net()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        d = _data(99)
        self.recipe = SurrogateRecipe(
            C, model=self.model, head=self.model[2],
            clean_data=(d["clean_features"], d["clean_labels"]), warmup_epochs=1,
            alpha_switch=4, clean_passes=2, clean_batch_size=8, smoothing=0.5,
            dropped_weight=0.1, generator=torch.Generator().manual_seed(11))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "recipe": self.recipe.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.recipe.load_state_dict(state["recipe"])


def _recipe_step(run: RecipeRun, t: int) -> torch.Tensor:
    d = _data(t)
    run.recipe.start_epoch(t)
    for xc, yc in run.recipe.clean_batches():  # shuffled by the recipe's generator
        run.opt.zero_grad()
        run.recipe.clean_loss(run.model(xc), yc).backward()
        run.opt.step()
    logits = run.model(d["features"])  # the default configuration: the forward's features
    w = run.recipe.weights(inputs=d["features"], labels=d["labels"], sample_ids=d["ids"])
    loss = run.recipe.loss(logits, d["labels"], w)
    run.opt.zero_grad()
    loss.backward()
    run.opt.step()
    return torch.cat([run.recipe.last_weights, loss.detach().reshape(1)])  # type: ignore[list-item]


class TargetsRecipeRun(RecipeRun):
    """The recipe with calibrated per-class thresholds and pseudo-labels for dropped samples: the
    thresholds are state (derived at a refresh, used until the next)."""

    def __init__(self) -> None:
        self.model = _net()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        d = _data(99)
        self.recipe = SurrogateRecipe(
            C, model=self.model, head=self.model[2],
            clean_data=(d["clean_features"], d["clean_labels"]), warmup_epochs=1,
            alpha_switch=0, clean_passes=1, clean_batch_size=8, thresholds="calibrated",
            calibration_quantile=0.3, pseudo_labels=True, pseudo_confidence=0.0,
            pseudo_ramp_epochs=3, dropped_target="bootstrap", dropped_weight=0.5,
            generator=torch.Generator().manual_seed(11))


def _targets_step(run: RecipeRun, t: int) -> torch.Tensor:
    d = _data(t)
    run.recipe.start_epoch(t)
    for xc, yc in run.recipe.clean_batches():
        run.opt.zero_grad()
        run.recipe.clean_loss(run.model(xc), yc).backward()
        run.opt.step()
    logits = run.model(d["features"])
    w = run.recipe.weights(inputs=d["features"], labels=d["labels"], sample_ids=d["ids"])
    tg = run.recipe.targets(d["labels"], w, logits=logits.detach())
    loss = soft_cross_entropy(logits, tg.soft_targets(C), tg.weights)
    run.opt.zero_grad()
    loss.backward()
    run.opt.step()
    return torch.cat([tg.weights, tg.labels.double(),
                      loss.detach().reshape(1)])


class LightningRecipeRun(RecipeRun):
    """The recipe as Lightning drives it (``robustweights.integrations.lightning``): the
    ``RecipeCallback`` starts each epoch and is what Lightning's checkpoint saves; each step
    iterates a ``RecipeDataLoader`` and dispatches on its tags, as a ``training_step`` does."""

    def __init__(self) -> None:
        from robustweights.integrations.lightning import RecipeCallback

        super().__init__()
        self.callback = RecipeCallback(self.recipe)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "callback": self.callback.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.callback.load_state_dict(state["callback"])


def _lightning_recipe_step(run: LightningRecipeRun, t: int) -> torch.Tensor:
    from robustweights.integrations.lightning import RecipeDataLoader

    d = _data(t)
    run.callback.on_train_epoch_start(SimpleNamespace(current_epoch=t), None)  # type: ignore[arg-type]
    pool = [(d["features"], d["labels"], d["ids"])]
    for kind, batch in RecipeDataLoader(run.recipe, pool):
        if kind == "clean":
            x, y = batch
            loss = run.recipe.clean_loss(run.model(x), y)
        else:
            x, y, ids = batch
            logits = run.model(x)
            w = run.recipe.weights(inputs=x, labels=y, sample_ids=ids)
            loss = run.recipe.loss(logits, y, w)
        run.opt.zero_grad()
        loss.backward()
        run.opt.step()
    return torch.cat([run.recipe.last_weights, loss.detach().reshape(1)])  # type: ignore[list-item]


def _elr_step(avg: PredictionAverage, t: int) -> torch.Tensor:
    d = _data(t)
    logits = _head()(d["features"]).detach()  # ids recur, so each step reads earlier rows
    targets = avg.update(d["ids"], logits)
    return torch.cat([targets.flatten(), elr_penalty(logits, targets).reshape(1).float()])


CASES: dict[str, Case] = {
    "fbr_recompute": Case(lambda: SurrogateReweighter(C, alpha=AlphaSchedule(C, 4)), _fbr_step),
    "fbr_incremental": Case(lambda: SurrogateReweighter(C, alpha=0.3, mode="incremental",
                                                        eta=0.05), _fbr_step),
    "l2rw_last_layer": Case(lambda: MetaReweighter(C, normalization="mean"), _l2rw_step),
    "l2rw_model": Case(lambda: ModelMetaReweighter(_net(), CE, normalization="mean"),
                       _model_step),
    "phase_monitor": Case(lambda: PhaseMonitor(freeze=True, warn=False), _monitor_step),
    "fbr_recipe": Case(RecipeRun, _recipe_step, own=lambda run: run.recipe),
    "fbr_recipe_targets": Case(TargetsRecipeRun, _targets_step, own=lambda run: run.recipe),
    "elr_prediction_average": Case(lambda: PredictionAverage(C, momentum=0.6), _elr_step),
}
if importlib.util.find_spec("lightning") is not None:  # CI installs the extra
    CASES["lightning_recipe_callback"] = Case(LightningRecipeRun, _lightning_recipe_step,
                                              own=lambda run: run.callback)
