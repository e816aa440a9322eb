"""The whole FBR recipe (``SurrogateRecipe``) in PyTorch Lightning, with checkpoints.

Needs ``pip install -e ".[lightning]"``. Every step of the recipe is a Lightning
training step: the train dataloader is ``RecipeDataLoader(recipe, pool)``, which
streams each epoch's clean-pass batches tagged ``"clean"`` and then the noisy pool's
tagged ``"pool"``, and ``training_step`` dispatches on the tag. So Lightning's DDP
gradient sync, precision (AMP), gradient clipping and accumulation apply to the clean
passes as to the pool. ``RecipeCallback`` starts the recipe's epoch (warm-up, alpha
schedule) and keeps its state in Lightning's checkpoint. The run stops after 6 epochs,
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

from robustweights import SurrogateRecipe
from robustweights.integrations.lightning import RecipeCallback, RecipeDataLoader


def make_data(n: int = 600, n_clean: int = 60, noise: float = 0.35, seed: int = 0
              ) -> dict[str, torch.Tensor]:
    """A 2-class problem, ``noise`` of the pool labels flipped, a small clean set."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + n_clean + 1000, 20, generator=g)
    y_true = (x[:, 0] + x[:, 1] > 0).long()
    flip = torch.rand(n, generator=g) < noise
    return {"x": x[:n], "y_true": y_true[:n], "flip": flip,
            "y": torch.where(flip, 1 - y_true[:n], y_true[:n]),
            "x_clean": x[n:n + n_clean], "y_clean": y_true[n:n + n_clean],
            "x_test": x[n + n_clean:], "y_test": y_true[n + n_clean:]}


class NoisyLabelClassifier(pl.LightningModule):
    """An MLP trained with the FBR recipe: noisy samples stop driving the loss."""

    def __init__(self, clean_data: tuple[torch.Tensor, torch.Tensor],
                 num_classes: int = 2, lr: float = 0.1) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(),
                                 nn.Linear(64, num_classes))
        # With 2 classes alpha must stay > 0 (the FBR method page): alpha_switch past
        # the run. The generator makes the clean passes' order part of the checkpoint.
        self.recipe = SurrogateRecipe(num_classes, model=self.net, head=self.net[2],
                                      clean_data=clean_data, warmup_epochs=2,
                                      alpha_switch=1000, clean_passes=5,
                                      clean_batch_size=20,
                                      # the plain filter on the training forward's
                                      # features (the default adds targets and mixup:
                                      # examples/recipe_loop.py)
                                      eval_features=False, dropped_weight=0.0,
                                      pseudo_labels=False,
                                      generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[str, tuple[torch.Tensor, ...]], batch_idx: int
                      ) -> torch.Tensor:
        kind, data = batch
        if kind == "clean":                             # a clean pass's batch
            x, y = data
            return self.recipe.clean_loss(self(x), y)
        x, y, idx = data                                # a noisy pool batch
        logits = self(x)                                # its features are hooked
        w = self.recipe.weights(inputs=x, labels=y,     # those features -> weights
                                sample_ids=idx, logits=logits)
        self.log("weight", w.mean(), on_epoch=True, on_step=False)
        return self.recipe.loss(logits, y, w)           # mean of w_i * loss_i

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def fit(data: dict[str, torch.Tensor], max_epochs: int, root: str,
        ckpt_path: str | None = None) -> tuple[NoisyLabelClassifier, pl.Trainer]:
    """Train (or resume from ``ckpt_path``) up to ``max_epochs`` on CPU."""
    pl.seed_everything(0, verbose=False)
    model = NoisyLabelClassifier((data["x_clean"], data["y_clean"]))
    pool = TensorDataset(data["x"], data["y"],
                         torch.arange(len(data["y"])))  # with sample ids
    # A seeded permutation per epoch (RecipeDataLoader sets the sampler's epoch), so a
    # resumed run sees the same batches as an uninterrupted one. Under DDP, leave the
    # sampler out: RecipeDataLoader gives the pool Lightning's DistributedSampler.
    sampler: DistributedSampler[int] = DistributedSampler(pool, num_replicas=1, rank=0,
                                                          seed=0)
    loader = RecipeDataLoader(model.recipe,
                              DataLoader(pool, batch_size=50, sampler=sampler))
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1,
                         logger=False, callbacks=[RecipeCallback(model.recipe)],
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=root)
    # weights_only: the checkpoint holds tensors and numbers only
    trainer.fit(model, loader, ckpt_path=ckpt_path, weights_only=True)
    return model, trainer


@torch.no_grad()
def evaluate(model: NoisyLabelClassifier, data: dict[str, torch.Tensor]
             ) -> tuple[float, torch.Tensor]:
    """Test accuracy on true labels, FBR's directions d of the pool (d > 0: kept)."""
    model.eval()
    accuracy = (model(data["x_test"]).argmax(1)
                == data["y_test"]).float().mean().item()
    return accuracy, model.recipe.directions(inputs=data["x"], labels=data["y"])


def main() -> None:
    data = make_data()
    with tempfile.TemporaryDirectory() as root:
        _, trainer = fit(data, max_epochs=6, root=root)  # "interrupted" after 6 epochs
        ckpt = str(Path(root) / "epoch6.ckpt")
        trainer.save_checkpoint(ckpt)                    # Lightning's own checkpoint
        model, _ = fit(data, max_epochs=12, root=root,
                       ckpt_path=ckpt)                   # resumes at epoch 6
    accuracy, d = evaluate(model, data)
    kept = d > 0                                         # weight above w0
    clean = ~data["flip"]
    print(f"accuracy on true labels {accuracy:.3f}; "
          f"kept {kept.float().mean():.2f} of samples, "
          f"{clean[kept].float().mean():.3f} correctly labelled "
          f"(pool {clean.float().mean():.3f})")


if __name__ == "__main__":
    main()
