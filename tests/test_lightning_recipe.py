"""The whole SurrogateRecipe under PyTorch Lightning (``RecipeCallback`` + ``RecipeDataLoader``):
every clean step is a Lightning training step, so Lightning's DDP, precision and clipping apply.

- the epoch each batch is trained in is the recipe's epoch and the pool sampler's epoch, in a
  fresh run and after resuming (Lightning calls ``iter()`` before ``on_train_epoch_start`` in
  the first epoch of a ``fit``);
- a run resumed from a ``ModelCheckpoint`` checkpoint equals the uninterrupted run bit for bit;
- under Lightning's own DDP (2 gloo CPU processes) with a different clean shard per rank, both
  ranks end equal to each other and to one process on the union of the shards (float64, no
  BatchNorm): the clean steps' gradients were synchronised;
- bf16-mixed precision and gradient clipping run and learn.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset

pl = pytest.importorskip("lightning.pytorch", reason="PyTorch Lightning is not installed: "
                                                     "pip install -e '.[lightning]'")

from robustweights import SurrogateRecipe  # noqa: E402
from robustweights.integrations.lightning import RecipeCallback, RecipeDataLoader  # noqa: E402

C, D = 3, 6
ROOT = Path(__file__).resolve().parents[1]


def make_data(n: int = 240, m: int = 48, noise: float = 0.4, dtype: torch.dtype = torch.float32,
              seed: int = 0) -> dict[str, torch.Tensor]:
    """Three Gaussian classes; ``noise`` of the pool labels replaced by a different class."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, D, generator=g, dtype=dtype) * 1.5
    y_true = torch.randint(0, C, (n + m + 600,), generator=g)
    x = centres[y_true] + torch.randn(n + m + 600, D, generator=g, dtype=dtype)
    flip = torch.rand(n, generator=g) < noise
    y = torch.where(flip, (y_true[:n] + torch.randint(1, C, (n,), generator=g)) % C, y_true[:n])
    return {"x": x[:n], "y": y, "flip": flip, "x_clean": x[n:n + m], "y_clean": y_true[n:n + m],
            "x_test": x[n + m:], "y_test": y_true[n + m:]}


class RankShard(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of ``range(n)``, read from the process group when
    iterated (the sampler is built before Lightning spawns the ranks)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _range(self) -> range:
        if dist.is_available() and dist.is_initialized():
            return range(dist.get_rank(), self.n, dist.get_world_size())
        return range(self.n)

    def __iter__(self):
        return iter(self._range())

    def __len__(self) -> int:
        return len(self._range())


class Module(pl.LightningModule):
    """A small MLP trained with the whole recipe; records what each training step saw."""

    def __init__(self, clean_data: Any, dtype: torch.dtype = torch.float32, lr: float = 0.1,
                 **recipe_kwargs: Any) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(D, 32), nn.Tanh(), nn.Linear(32, C)).to(dtype)
        kwargs: dict[str, Any] = {"warmup_epochs": 1, "alpha_switch": 3, "clean_passes": 2,
                                  "clean_batch_size": 16, "dropped_weight": 0.0,
                                  "generator": torch.Generator().manual_seed(5)}
        kwargs.update(recipe_kwargs)
        self.recipe = SurrogateRecipe(C, model=self.net, head=self.net[2],
                                      clean_data=clean_data, **kwargs)
        self.lr = lr
        self.seen: list[tuple[int, int, str, int | None]] = []  # (epoch, recipe epoch, kind, ..)

    def training_step(self, batch: tuple[str, Any], batch_idx: int) -> torch.Tensor:
        kind, data = batch
        sampler = getattr(self.trainer.train_dataloader.pool_loader(), "sampler", None)
        self.seen.append((self.trainer.current_epoch, self.recipe.epoch, kind,
                          getattr(sampler, "epoch", None)))
        if kind == "clean":
            x, y = data
            return self.recipe.clean_loss(self.net(x), y)
        x, y, idx = data
        logits = self.net(x)  # the default configuration's features: the training forward's
        w = self.recipe.weights(inputs=x, labels=y, sample_ids=idx)
        return self.recipe.loss(logits, y, w)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def pool_loader(data: dict[str, torch.Tensor], batch: int, sampler: Any = "seeded") -> DataLoader:
    ds = TensorDataset(data["x"], data["y"], torch.arange(len(data["y"])))
    if sampler == "seeded":  # a per-epoch permutation that a resumed run sees again
        sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0)
    return DataLoader(ds, batch_size=batch, sampler=sampler, shuffle=sampler is None)


def fit(module: Module, pool: DataLoader, root: Path, max_epochs: int, ckpt_path: str | None = None,
        callbacks: tuple[Any, ...] = (), **trainer_kwargs: Any) -> pl.Trainer:
    kwargs: dict[str, Any] = {"accelerator": "cpu", "devices": 1, "enable_checkpointing": False}
    kwargs.update(trainer_kwargs)
    trainer = pl.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root),
                         callbacks=[RecipeCallback(module.recipe), *callbacks], **kwargs)
    trainer.fit(module, RecipeDataLoader(module.recipe, pool), ckpt_path=ckpt_path,
                weights_only=True)
    return trainer


def check_epochs(seen: list[tuple[int, int, str, int | None]], epochs: range, clean: int,
                 pool: int) -> None:
    """Each epoch: ``clean`` clean steps then ``pool`` pool steps, all of them trained with the
    recipe (and the pool's sampler) at the Lightning epoch."""
    assert [s[0] for s in seen] == [e for e in epochs for _ in range(clean + pool)], seen
    for epoch, recipe_epoch, _kind, _sampler_epoch in seen:
        assert recipe_epoch == epoch, f"a batch of epoch {epoch} ran at recipe epoch {recipe_epoch}"
    for e in epochs:
        kinds = [s[2] for s in seen if s[0] == e]
        assert kinds == ["clean"] * clean + ["pool"] * pool, f"epoch {e}: {kinds}"
        sampler_epochs = {s[3] for s in seen if s[0] == e and s[2] == "pool"}
        assert sampler_epochs == {e}, f"epoch {e}: the pool's sampler was at {sampler_epochs}"


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_resumed_run_equals_uninterrupted_run_and_epochs_line_up(tmp_path: Path) -> None:
    data = make_data()
    clean = (data["x_clean"], data["y_clean"])
    pl.seed_everything(0, verbose=False)
    straight = Module(clean)
    ckpts = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1,
                                         every_n_epochs=1, filename="{epoch}")
    trainer = fit(straight, pool_loader(data, 40), tmp_path / "a", 4, callbacks=(ckpts,),
                  enable_checkpointing=True)
    # 2 clean passes of ceil(48 / 16) = 3 batches, then 240 / 40 = 6 pool batches per epoch;
    # every one of them an optimizer step
    check_epochs(straight.seen, range(4), clean=6, pool=6)
    assert trainer.global_step == 4 * 12

    pl.seed_everything(0, verbose=False)
    resumed = Module(clean)
    saved = torch.load(tmp_path / "ckpt" / "epoch=1.ckpt", weights_only=True)
    assert saved["callbacks"]["RecipeCallback"]["epoch"] == 1
    again = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1,
                                         every_n_epochs=1, filename="{epoch}")
    fit(resumed, pool_loader(data, 40), tmp_path / "b", 4, callbacks=(again,),
        enable_checkpointing=True, ckpt_path=str(tmp_path / "ckpt" / "epoch=1.ckpt"))
    check_epochs(resumed.seen, range(2, 4), clean=6, pool=6)
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), f"parameter {name} differs after resuming"
    a, b = straight.recipe.state_dict(), resumed.recipe.state_dict()
    assert torch.equal(a["generator"], b["generator"]), "the clean passes' generator differs"
    assert torch.equal(straight.recipe.last_weights, resumed.recipe.last_weights)


class SaveRank(pl.Callback):
    """Each rank writes its parameters, optimizer steps and what it trained on at the end."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: Module) -> None:  # type: ignore[override]
        torch.save({"params": pl_module.net.state_dict(), "steps": trainer.global_step,
                    "seen": pl_module.seen}, self.out / f"rank{trainer.global_rank}.pt")


def ddp_run(out: Path, world: int, epochs: int = 3) -> list[dict[str, Any]]:
    """The recipe in float64 without BatchNorm: ``world`` ranks, each with its shard of the
    clean set (clean batches of 8 per rank) and of every pool batch (12 per rank)."""
    data = make_data(n=96, m=32, dtype=torch.float64)
    clean_ds = TensorDataset(data["x_clean"], data["y_clean"])
    clean = DataLoader(clean_ds, batch_size=16 // world, sampler=RankShard(32))
    pl.seed_everything(0, verbose=False)  # PL_GLOBAL_SEED: the injected sampler's seed
    module = Module(clean, dtype=torch.float64, lr=0.05, clean_passes=2)
    if world == 1:  # one process on the union: the same permutation, whole batches
        pool = pool_loader(data, 24)
    else:  # a plain shuffled loader: RecipeDataLoader gives it the DistributedSampler
        pool = pool_loader(data, 24 // world, sampler=None)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"devices": world, "strategy": "ddp_fork"} if world > 1 else {}
    fit(module, pool, out, epochs, callbacks=(SaveRank(out),), **kwargs)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="Lightning's ddp_fork needs the fork start method")
def test_lightning_ddp_equals_one_process_on_the_union_of_the_shards(tmp_path: Path) -> None:
    # Lightning's own DDP strategy, launched by fork ("ddp_spawn" re-imports torch and Lightning
    # in every rank: ~40 s more here for the same DDP), from a fresh interpreter: forking this
    # process after other tests started threads (JAX's) could deadlock; the timeout bounds it.
    code = ("import sys, torch; from pathlib import Path; torch.set_num_threads(1); "
            f"sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]; "
            f"import test_lightning_recipe as t; t.ddp_run(Path({str(tmp_path / 'ddp')!r}), 2)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, f"the DDP run failed:\n{proc.stderr[-3000:]}"
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=False) for r in range(2)]
    (single,) = ddp_run(tmp_path / "single", world=1)
    # per epoch 2 clean passes of 32 / 2 / 8 = 2 batches and 96 / 2 / 12 = 4 pool batches per
    # rank; each an optimizer step of Lightning's
    for r, rank in enumerate(ranks):
        assert rank["steps"] == single["steps"] == 3 * (4 + 4), (r, rank["steps"])
        check_epochs(rank["seen"], range(3), clean=4, pool=4)
    for name, p in single["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), (
            f"{name} differs between the ranks")
        torch.testing.assert_close(ranks[0]["params"][name], p, rtol=1e-10, atol=1e-12,
                                   msg=lambda m, n=name: f"{n}: DDP vs one process: {m}")


class AmpModule(Module):
    """Records each step's logits dtype and each gradient clipping Lightning asks for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dtypes: list[tuple[str, torch.dtype]] = []
        self.clips = 0

    def training_step(self, batch: tuple[str, Any], batch_idx: int) -> torch.Tensor:
        kind, (x, *_) = batch
        self.dtypes.append((kind, self.net(x).dtype))
        return super().training_step(batch, batch_idx)

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        self.clips += 1
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)


@torch.no_grad()
def evaluate(module: Module, data: dict[str, torch.Tensor]) -> tuple[float, float, float]:
    """(test accuracy, kept precision, pool precision) with the recipe's final kept set."""
    module.eval()
    accuracy = (module.net(data["x_test"]).argmax(1) == data["y_test"]).float().mean().item()
    kept = module.recipe.directions(inputs=data["x"], labels=data["y"]) > 0
    clean = ~data["flip"]
    return accuracy, clean[kept].float().mean().item(), clean.float().mean().item()


def test_bf16_mixed_precision_and_gradient_clipping_apply_to_every_step_and_learn(
        tmp_path: Path) -> None:
    data = make_data(n=480)
    pl.seed_everything(0, verbose=False)
    module = AmpModule((data["x_clean"], data["y_clean"]), warmup_epochs=2, alpha_switch=1000,
                       lr=0.05)
    trainer = fit(module, pool_loader(data, 40), tmp_path, 10, precision="bf16-mixed",
                  gradient_clip_val=0.5)
    assert trainer.global_step == 10 * (6 + 12)
    assert module.clips == trainer.global_step, "every step, clean ones included, is clipped"
    assert {d for _, d in module.dtypes} == {torch.bfloat16}, "every step runs under autocast"
    accuracy, precision, pool = evaluate(module, data)
    assert accuracy > 0.85, f"accuracy on true labels {accuracy} (chance 0.33)"
    assert precision > pool + 0.2, f"kept samples {precision} should be cleaner than {pool}"


class EveryOther(Sampler[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(0, self.n, 2))

    def __len__(self) -> int:
        return (self.n + 1) // 2


def test_pool_gets_lightnings_distributed_sampler_under_ddp(monkeypatch) -> None:
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    data = make_data(n=40)
    recipe = Module((data["x_clean"], data["y_clean"])).recipe
    plain = pool_loader(data, 8, sampler=None)
    own = pool_loader(data, 8)  # its own DistributedSampler: left alone
    custom = pool_loader(data, 4, sampler=EveryOther(40))
    assert RecipeDataLoader(recipe, plain).pool_loader() is plain  # no process group
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    stream = RecipeDataLoader(recipe, plain)
    sharded = stream.pool_loader()
    assert stream.pool_loader() is sharded, "rebuilt once"
    s = sharded.sampler
    assert type(s) is DistributedSampler and (s.num_replicas, s.rank, s.shuffle, s.seed) == (
        2, 1, True, 7)
    assert sharded.batch_size == 8 and len(stream) == 6 + 3  # 40 / 2 / 8 pool batches
    assert RecipeDataLoader(recipe, own).pool_loader() is own
    wrapped = RecipeDataLoader(recipe, custom).pool_loader().sampler
    assert isinstance(wrapped, DistributedSamplerWrapper) and len(wrapped) == 10  # 20 / 2


def test_recipe_callback_rejects_wrong_arguments() -> None:
    with pytest.raises(TypeError, match="Expected `recipe` to be a SurrogateRecipe, but got"):
        RecipeCallback(object())  # type: ignore[arg-type]
