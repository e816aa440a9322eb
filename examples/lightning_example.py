"""FBR in a PyTorch Lightning LightningModule, with checkpoint and resume.

Needs ``pip install "robustweights[lightning]"``. The module computes FBR weights in its
``training_step`` from the features a ``FeatureCapture`` records on the head; the package's
``ReweighterCallback`` refreshes the clean set at every epoch start (eval mode, no gradients)
and stores the reweighter's state in Lightning's checkpoint. The run stops after 6 epochs,
saves a checkpoint, and a new Trainer resumes from it to epoch 12.

    python examples/lightning_example.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from robustweights import FeatureCapture, SurrogateReweighter, WeightedLoss
from robustweights.integrations.lightning import ReweighterCallback


def make_data(n: int = 600, n_clean: int = 60, noise: float = 0.35, seed: int = 0
              ) -> dict[str, torch.Tensor]:
    """A 2-class problem with ``noise`` of the pool labels flipped, and a small clean set."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n_clean + 1000, 20, generator=g)
    y_true = (x[:, 0] + x[:, 1] > 0).long()
    flip = torch.rand(n, generator=g) < noise
    return {"x": x[:n], "y_true": y_true[:n], "flip": flip,
            "y": torch.where(flip, 1 - y_true[:n], y_true[:n]),
            "x_clean": x[n:n + n_clean], "y_clean": y_true[n:n + n_clean],
            "x_test": x[n + n_clean:], "y_test": y_true[n + n_clean:]}


class NoisyLabelClassifier(pl.LightningModule):
    """An MLP trained with FBR weights: noisy samples stop driving the loss."""

    def __init__(self, num_classes: int = 2, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, num_classes))
        self.capture = FeatureCapture(self.net[2])  # the head's input: penultimate features
        self.reweighter = SurrogateReweighter(num_classes=num_classes)  # reference defaults
        self.criterion = WeightedLoss(nn.CrossEntropyLoss())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
                      ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        w = self.reweighter.weights(features=self.capture.features, labels=y)  # cached clean set
        self.log("kept", (w > 0).float().mean(), on_epoch=True, on_step=False)
        return self.criterion(logits, y, weights=w)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=0.9)


def fit(data: dict[str, torch.Tensor], max_epochs: int, root: str,
        ckpt_path: str | None = None) -> tuple[NoisyLabelClassifier, pl.Trainer]:
    """Train (or resume from ``ckpt_path``) up to ``max_epochs`` on CPU."""
    pl.seed_everything(0, verbose=False)
    model = NoisyLabelClassifier()
    callback = ReweighterCallback(model.reweighter, model.capture,
                                  (data["x_clean"], data["y_clean"]))
    pool = TensorDataset(data["x"], data["y"])
    # A seeded permutation per epoch (Lightning calls the sampler's set_epoch), so a resumed
    # run sees the same batches as an uninterrupted one.
    sampler: DistributedSampler[int] = DistributedSampler(pool, num_replicas=1, rank=0, seed=0)
    loader = DataLoader(pool, batch_size=50, sampler=sampler)
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
                         callbacks=[callback], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=root)
    trainer.fit(model, loader, ckpt_path=ckpt_path, weights_only=True)  # tensors and numbers only
    return model, trainer


@torch.no_grad()
def evaluate(model: NoisyLabelClassifier, data: dict[str, torch.Tensor]
             ) -> tuple[float, torch.Tensor]:
    """Test accuracy on true labels, and the pool's final weights (clean set in eval mode)."""
    model.eval()
    model(data["x_clean"])
    model.reweighter.set_clean(features=model.capture.features, labels=data["y_clean"])
    model(data["x"])
    w = model.reweighter.weights(features=model.capture.features, labels=data["y"])
    accuracy = (model(data["x_test"]).argmax(1) == data["y_test"]).float().mean().item()
    return accuracy, w


def main() -> None:
    data = make_data()
    with tempfile.TemporaryDirectory() as root:
        _, trainer = fit(data, max_epochs=6, root=root)          # "interrupted" after 6 epochs
        ckpt = str(Path(root) / "epoch6.ckpt")
        trainer.save_checkpoint(ckpt)                            # Lightning's own checkpoint
        model, _ = fit(data, max_epochs=12, root=root, ckpt_path=ckpt)  # resumes at epoch 6
    accuracy, w = evaluate(model, data)
    kept = w > 0
    clean = ~data["flip"]
    print(f"accuracy on true labels {accuracy:.3f}; kept {kept.float().mean():.2f} of samples, "
          f"{clean[kept].float().mean():.3f} correctly labelled (pool {clean.float().mean():.3f})")


if __name__ == "__main__":
    main()
