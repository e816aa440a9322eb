"""Lightning and Hugging Face Trainer: the examples (the whole SurrogateRecipe) learn through noisy
labels, and a Lightning run resumed from its checkpoint gives the same weights as an
uninterrupted one; ReweighterCallback (a bare reweighter) checkpoints its state.

Each test skips (with the extra to install) when its framework is missing; CI installs the
extras (``.[test,lightning,hf,jax]``), so there they run.
"""

from __future__ import annotations

import importlib
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_report(out: str) -> tuple[float, float, float, float]:
    """(accuracy, kept fraction, kept precision, pool precision) from an example's last line."""
    m = re.search(r"accuracy on true labels (\d\.\d+); kept (\d\.\d+) of samples, (\d\.\d+) "
                  r"correctly labelled \(pool (\d\.\d+)\)", out)
    assert m is not None, f"the example's report line is missing: {out!r}"
    acc, kept, precision, pool = map(float, m.groups())
    return acc, kept, precision, pool


# ---------------------------------------------------------------------------------- Lightning
@pytest.fixture(scope="module")
def lightning_example():
    pytest.importorskip("lightning", reason="PyTorch Lightning is not installed: "
                                            "pip install -e '.[lightning]'")
    return runpy.run_path(str(ROOT / "examples" / "lightning_example.py"), run_name="example")


def test_lightning_example_learns_through_noisy_labels(lightning_example, capsys):
    lightning_example["main"]()
    acc, _kept, precision, pool = parse_report(capsys.readouterr().out)
    assert acc > 0.8, f"accuracy on true labels {acc} (chance 0.5)"
    assert precision > pool + 0.15, f"kept samples {precision} should be cleaner than {pool}"


def test_lightning_resumed_run_equals_uninterrupted_run(lightning_example, tmp_path):
    ex = lightning_example
    data = ex["make_data"]()
    straight, _ = ex["fit"](data, max_epochs=4, root=str(tmp_path / "straight"))
    _, trainer = ex["fit"](data, max_epochs=2, root=str(tmp_path / "a"))
    ckpt = tmp_path / "a" / "epoch2.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)["callbacks"]["RecipeCallback"]
    assert saved["epoch"] == 1, saved  # the recipe's state, its clean passes' generator included
    resumed, _ = ex["fit"](data, max_epochs=4, root=str(tmp_path / "b"), ckpt_path=str(ckpt))
    assert resumed.recipe.epoch == straight.recipe.epoch == 3
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), f"parameter {name} differs after resuming"
    _, d_straight = ex["evaluate"](straight, data)
    _, d_resumed = ex["evaluate"](resumed, data)
    assert torch.equal(d_straight, d_resumed), "resumed directions differ from uninterrupted ones"


def _incremental_run(tmp_path: Path, epochs: int, ckpt: Path | None, save: Path | None
                     ) -> torch.Tensor:
    """Incremental FBR (per-sample weights kept across epochs) in a small LightningModule."""
    import lightning.pytorch as pl
    from torch import nn
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from robustweights import FeatureCapture, SurrogateReweighter, weighted_mean
    from robustweights.integrations.lightning import ReweighterCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
            self.capture = FeatureCapture(self.net[2])
            self.reweighter = SurrogateReweighter(3, mode="incremental", eta=0.05)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y, ids = batch
            losses = nn.functional.cross_entropy(self(x), y, reduction="none")
            w = self.reweighter.weights(features=self.capture.features, labels=y, sample_ids=ids)
            return weighted_mean(losses, w)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    g = torch.Generator().manual_seed(1)
    x, xc = torch.randn(120, 6, generator=g), torch.randn(30, 6, generator=g)
    y = torch.randint(0, 3, (120,), generator=g)
    pool = TensorDataset(x, y, torch.arange(120))
    pl.seed_everything(0, verbose=False)
    model = Module()
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path),
                         callbacks=[ReweighterCallback(model.reweighter, model.capture,
                                                       (xc, torch.arange(30) % 3))])
    loader = DataLoader(pool, batch_size=40,
                        sampler=DistributedSampler(pool, num_replicas=1, rank=0, seed=0))
    trainer.fit(model, loader, ckpt_path=None if ckpt is None else str(ckpt))
    if save is not None:
        trainer.save_checkpoint(save)
    return model.reweighter.state_dict()["sample_weights"]


def test_lightning_checkpoint_carries_the_incremental_weights(lightning_example, tmp_path):
    straight = _incremental_run(tmp_path, 4, None, None)
    ckpt = tmp_path / "half.ckpt"
    half = _incremental_run(tmp_path, 2, None, ckpt)
    resumed = _incremental_run(tmp_path, 4, ckpt, None)
    assert not torch.equal(half, straight), "the per-sample weights should move in epochs 3-4"
    assert torch.equal(resumed, straight), "the resumed per-sample weights differ"


def test_lightning_integration_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "robustweights.integrations.lightning", raising=False)
    with pytest.raises(ImportError, match=r"pip install \"robustweights\[lightning\]\""):
        importlib.import_module("robustweights.integrations.lightning")


def test_lightning_callback_rejects_wrong_arguments(lightning_example):
    from robustweights import FeatureCapture, SurrogateReweighter
    from robustweights.integrations.lightning import ReweighterCallback

    cap = FeatureCapture(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Expected `reweighter` to be a robustweights reweighter"):
        ReweighterCallback(object(), cap, (torch.zeros(2, 2), torch.zeros(2)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected `capture` to be a FeatureCapture"):
        ReweighterCallback(SurrogateReweighter(2), object(),  # type: ignore[arg-type]
                           (torch.zeros(2, 2), torch.zeros(2)))


def test_lightning_callback_refuses_the_model_reweighter(lightning_example):
    from torch import nn

    from robustweights import FeatureCapture, ModelMetaReweighter
    from robustweights.integrations.lightning import ReweighterCallback

    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    rw = ModelMetaReweighter(net, nn.CrossEntropyLoss(reduction="none"))
    with pytest.raises(TypeError, match=r"Expected `reweighter` to be a reweighter of features "
                                        r"\(SurrogateReweighter or MetaReweighter\), but got "
                                        r"ModelMetaReweighter.*pass `clean_inputs`"):
        ReweighterCallback(rw, FeatureCapture(net[2]), (torch.zeros(2, 2), torch.zeros(2)))


@pytest.mark.parametrize("which", ["surrogate", "meta"])
def test_lightning_callback_refresh_equals_set_clean(lightning_example, which):
    # Every reweighter the callback accepts gets its clean set from it: the eval-mode features
    # (and the module's outputs as logits) of the clean data, streamed.
    import lightning.pytorch as pl
    from torch import nn

    from robustweights import FeatureCapture, MetaReweighter, SurrogateReweighter
    from robustweights.integrations.lightning import ReweighterCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                     nn.Linear(8, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    def make() -> SurrogateReweighter | MetaReweighter:
        return SurrogateReweighter(3, alpha=0.5) if which == "surrogate" else MetaReweighter(3)

    torch.manual_seed(0)
    module = Module().train()
    capture = FeatureCapture(module.net[3])
    xc, yc = torch.randn(30, 6), torch.arange(30) % 3
    rw = make()
    cb = ReweighterCallback(rw, capture, [(xc[:12], yc[:12]), (xc[12:], yc[12:])])
    cb.refresh(module)
    assert module.training, "the module's training mode must be restored"
    module.eval()
    with torch.no_grad():
        logits = module(xc)
    ref = make()
    ref.set_clean(features=capture.features, logits=logits, labels=yc)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    with torch.no_grad():
        z = module(x)
    batch = dict(features=capture.features, logits=z, labels=y)
    torch.testing.assert_close(rw.weights(**batch), ref.weights(**batch), rtol=1e-6, atol=1e-7)


def test_lightning_callback_refresh_keeps_a_frozen_submodule_frozen(lightning_example):
    # The refresh runs in eval mode and restores every submodule's own mode: a backbone the
    # module froze in eval mode (e.g. its BatchNorm statistics) stays in eval mode.
    import lightning.pytorch as pl
    from torch import nn

    from robustweights import FeatureCapture, SurrogateReweighter
    from robustweights.integrations.lightning import ReweighterCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU())
            self.head = nn.Linear(8, 3)
            self.seen_training: list[bool] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen_training.append(self.backbone[1].training or self.head.training)
            return self.head(self.backbone(x))

    module = Module().train()
    module.backbone.eval()  # frozen by the caller
    cb = ReweighterCallback(SurrogateReweighter(3, alpha=0.5), FeatureCapture(module.head),
                            (torch.randn(12, 6), torch.arange(12) % 3))
    for _ in range(2):
        cb.refresh(module)
        assert module.training and module.head.training, "the training mode must be restored"
        assert not module.backbone.training and not module.backbone[1].training, (
            "the frozen backbone must stay in eval mode after a refresh")
    assert module.seen_training == [False, False], "the clean forwards must run in eval mode"


def test_lightning_callback_refuses_a_one_shot_iterator(lightning_example):
    from robustweights import FeatureCapture, SurrogateReweighter
    from robustweights.integrations.lightning import ReweighterCallback

    batches = iter([(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))])
    with pytest.raises(TypeError, match=r"Expected `clean_data` to be an \(inputs, labels\) "
                                        r"pair of tensors or a re-iterable"):
        ReweighterCallback(SurrogateReweighter(2), FeatureCapture(torch.nn.Linear(2, 2)), batches)


def test_lightning_callback_refused_load_changes_nothing(lightning_example):
    from robustweights import FeatureCapture, SurrogateReweighter
    from robustweights.integrations.lightning import ReweighterCallback

    def make() -> ReweighterCallback:
        return ReweighterCallback(SurrogateReweighter(3, alpha=0.5),
                                  FeatureCapture(torch.nn.Linear(8, 3)),
                                  (torch.randn(12, 8), torch.arange(12) % 3))

    saved = make()
    saved.refreshes = 4
    saved.reweighter.set_epoch(7)
    good = saved.state_dict()
    cb = make()
    bad = {**good, "reweighter": {**good["reweighter"], "sample_weights": object()}}
    with pytest.raises(ValueError, match=r"Expected `state_dict\['sample_weights'\]`"):
        cb.load_state_dict(bad)
    assert cb.refreshes == 0 and cb.reweighter.epoch == 0
    with pytest.raises(ValueError, match=r"Expected `state_dict\['refreshes'\]` to be a "
                                         r"non-negative integer, but got -1"):
        cb.load_state_dict({**good, "refreshes": -1})
    assert cb.refreshes == 0 and cb.reweighter.epoch == 0
    cb.load_state_dict(good)
    assert cb.refreshes == 4 and cb.reweighter.epoch == 7


# ---------------------------------------------------------------------- Hugging Face Trainer
@pytest.fixture(scope="module")
def hf_example():
    pytest.importorskip("transformers", reason="transformers is not installed: "
                                               "pip install -e '.[hf]'")
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate: pip install -e '.[hf]'")
    return runpy.run_path(str(ROOT / "examples" / "hf_trainer_example.py"), run_name="example")


def test_hf_trainer_example_learns_through_noisy_labels(hf_example, capsys):
    hf_example["main"]()
    acc, _kept, precision, pool = parse_report(capsys.readouterr().out)
    # plain cross entropy on the same data and model reaches 0.906 (docs/integrations.md)
    assert acc > 0.95, f"accuracy on true labels {acc} (chance 0.33, plain CE 0.906)"
    assert precision > pool + 0.2, f"kept samples {precision} should be cleaner than {pool}"


def test_hf_trainer_steps_are_the_recipe_epochs(hf_example):
    """Each Trainer step is one batch of the stream, in the recipe's epoch: 2 clean passes of
    ceil(60 / 32) = 2 batches, then ceil(480 / 32) = 15 pool batches, every epoch."""
    seen: list[tuple[int, str, bool]] = []  # (recipe epoch, kind, every weight 0.5)

    class Recording(hf_example["RecipeTrainer"]):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            warm = inputs[0] == "pool" and bool((self.recipe.last_weights == 0.5).all())
            seen.append((self.recipe.epoch, inputs[0], warm))
            return loss

    _, _, trainer = hf_example["train"](hf_example["make_data"](), epochs=3,
                                        trainer_cls=Recording)
    per_epoch = 4 + 15
    assert trainer.state.global_step == len(seen) == 3 * per_epoch
    for k, (epoch, kind, warm) in enumerate(seen):
        assert epoch == k // per_epoch, f"step {k} ran at recipe epoch {epoch}"
        assert kind == ("clean" if k % per_epoch < 4 else "pool"), (k, kind)
        if kind == "pool":
            assert warm == (epoch < 2), f"step {k}: warm-up weights {warm} in epoch {epoch}"
