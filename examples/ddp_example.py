import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from robustweights import FeatureCapture, SurrogateReweighter, WeightedLoss


def train(rank, world, init_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)                        # same data and model on each rank
    X = torch.randn(2000, 20)
    y_true = (X[:, 0] + X[:, 1] > 0).long()
    flip = torch.rand(2000) < 0.35              # 35% of the labels are wrong
    y = torch.where(flip, 1 - y_true, y_true)
    Xc = torch.randn(100, 20)                   # a small trusted clean set
    yc = (Xc[:, 0] + Xc[:, 1] > 0).long()

    model = DDP(nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2)))
    cap = FeatureCapture(model.module[2])       # the head's input: penultimate features
    rw = SurrogateReweighter(num_classes=2)     # no DDP option: sync is automatic
    criterion = WeightedLoss(nn.CrossEntropyLoss())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = TensorDataset(X, y, flip)
    sampler = DistributedSampler(data, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=50, sampler=sampler)  # 50 per rank, 100 in all
    for epoch in range(15):
        sampler.set_epoch(epoch)
        with torch.no_grad():                   # each rank adds its share of the clean
            model.module(Xc[rank::world])       # set; the class sums are all-reduced
            rw.set_clean(features=cap.features, labels=yc[rank::world])
        kept = torch.zeros(3)                   # kept, kept and correct, seen
        for xb, yb, fb in loader:
            logits = model(xb)
            w = rw.weights(features=cap.features, labels=yb)  # as one process on 100
            loss = criterion(logits, yb, weights=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            kept += torch.stack([(w > 0).sum(), ((w > 0) & ~fb).sum(),
                                 torch.tensor(len(w))])
    dist.all_reduce(kept)                       # last epoch's counts over all ranks
    with torch.no_grad():
        accuracy = (model.module(X).argmax(1) == y_true).float().mean().item()
    if rank == 0:
        print(f"{world} processes: accuracy on true labels {accuracy:.3f}; kept "
              f"{kept[0] / kept[2]:.2f} of samples, "
              f"{kept[1] / kept[0]:.3f} correctly labelled "
              f"(pool {(~flip).float().mean():.3f})")
    dist.barrier()                              # no rank leaves while others still talk
    del model                                   # DDP's reducer before the process group
    dist.destroy_process_group()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:  # a fresh rendezvous file: no port clash
        mp.spawn(train, args=(2, os.path.join(tmp, "init")), nprocs=2)
