import warnings

import torch, torch.nn as nn
from robustweights import FeatureCapture, MetaReweighter, PhaseMonitor, WeightedLoss

torch.manual_seed(0)
X = torch.randn(2000, 20); y_true = (X[:, 0] + X[:, 1] > 0).long()
flip = torch.rand(2000) < 0.35                  # 35% of the labels are wrong
y = torch.where(flip, 1 - y_true, y_true)
Xc = torch.randn(100, 20)                       # a small trusted clean set
yc = (Xc[:, 0] + Xc[:, 1] > 0).long()

model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
cap = FeatureCapture(model[2])
rw = MetaReweighter(num_classes=2, normalization="mean")  # L2RW, last-layer form
monitor = PhaseMonitor(freeze=True)             # warns once on entering post-filtering
criterion = WeightedLoss(nn.CrossEntropyLoss())
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for epoch in range(30):
        with torch.no_grad():                   # clean logits, features and loss
            zc = model(Xc); rw.set_clean(logits=zc, features=cap.features, labels=yc)
            clean_loss = nn.functional.cross_entropy(zc, yc).item()
        for idx in torch.randperm(2000).split(200):
            logits = model(X[idx])
            w = rw.weights(logits=logits.detach(), features=cap.features,
                           labels=y[idx])
            report = monitor.update(w, clean_loss=clean_loss, coupling=rw.last_scores,
                                    sample_ids=idx, true_clean=~flip[idx])
            w = monitor.weights_to_use(w, sample_ids=idx)  # stored once frozen
            loss = criterion(logits, y[idx], weights=w)
            opt.zero_grad(); loss.backward(); opt.step()
print(f"phase {report.phase}; boundaries {monitor.boundaries}; "
      f"kept {report.kept_fraction:.2f} "
      f"(precision {report.precision:.2f}, recall {report.recall:.2f}); "
      f"ESS {report.effective_sample_size:.0f} of {len(w)}; warnings: {len(caught)}")
