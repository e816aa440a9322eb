"""Does a training term collapse the network onto one class? A short probe, no test image.

Trains the preset's ``fbr_plus`` with ``--set`` overrides for a few epochs on one label set and
seed, and after every epoch prints, for the first ``--pool`` pool images: the share whose true
label the network predicts in eval mode and in train mode (batch statistics; the probe's
forward nudges BatchNorm's running statistics, so it is a diagnosis, not a benchmark), and how
many of them each class takes in eval mode::

    python -m benchmarks.cifar_n.studies.collapse_probe --set consistency=2.5 --epochs 7
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch

from benchmarks.cifar_n.augment import normalize
from benchmarks.cifar_n.cli import parse_value
from benchmarks.cifar_n.data import build_split, load_dataset
from benchmarks.cifar_n.methods import METHODS
from benchmarks.cifar_n.methods.base import Context
from benchmarks.cifar_n.presets import PRESETS

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="memorise", choices=sorted(PRESETS))
    ap.add_argument("--noise", default="worst")
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--pool", type=int, default=1000, help="pool images scored (from the first)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="fbr_plus parameters, e.g. consistency=2.5")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    preset = PRESETS[args.preset]
    params: dict[str, object] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        params[key] = parse_value(value)
    ds = load_dataset(preset.dataset, args.data_dir, download=False)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    split = build_split(ds, args.noise, args.seed, preset.clean_size, "cpu", stratified=True)
    ctx = Context(split.pool_images, split.pool_labels, split.clean_images, split.clean_labels,
                  split.num_classes, preset.train, args.seed, "cpu")
    method = METHODS["fbr_plus"](**params)
    method.setup(ctx)
    x = ctx.memory_format(normalize(split.pool_images[: args.pool]))
    true = split.pool_true[: args.pool]
    print(f"fbr_plus {params} on {args.preset} / {args.noise}, seed {args.seed}: "
          f"fit of the first {len(true)} pool images' true labels")
    for epoch in range(args.epochs):
        method.train_epoch(epoch)
        model = method.eval_model()
        with torch.no_grad():
            model.eval()
            z_eval = model(x)
            model.train()
            z_train = model(x)
        counts = np.bincount(z_eval.argmax(1).numpy(), minlength=split.num_classes)
        print(f"epoch {epoch}: eval {float((z_eval.argmax(1) == true).float().mean()):.3f}, "
              f"train mode {float((z_train.argmax(1) == true).float().mean()):.3f}, "
              f"eval classes {counts.tolist()}", flush=True)


if __name__ == "__main__":
    main()
