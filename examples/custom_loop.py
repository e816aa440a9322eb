import torch, torch.nn as nn
from robustweights import FeatureCapture, SurrogateReweighter, WeightedLoss

torch.manual_seed(0)
X = torch.randn(2000, 20); y_true = (X[:, 0] + X[:, 1] > 0).long()
flip = torch.rand(2000) < 0.35                  # 35% of the labels are wrong
y = torch.where(flip, 1 - y_true, y_true)
Xc = torch.randn(100, 20)                       # a small trusted clean set
yc = (Xc[:, 0] + Xc[:, 1] > 0).long()

model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
cap = FeatureCapture(model[2])                  # the head's input: penultimate features
rw = SurrogateReweighter(num_classes=2)         # FBR with the reference defaults
criterion = WeightedLoss(nn.CrossEntropyLoss())
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for epoch in range(15):
    with torch.no_grad():                       # refresh the clean prototypes
        model(Xc); rw.set_clean(features=cap.features, labels=yc)
    for idx in torch.randperm(2000).split(100):
        logits = model(X[idx])
        w = rw.weights(features=cap.features, labels=y[idx])
        loss = criterion(logits, y[idx], weights=w)
        opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad():
    model(X); kept = rw.weights(features=cap.features, labels=y) > 0
    accuracy = (model(X).argmax(1) == y_true).float().mean().item()
print(f"accuracy on true labels {accuracy:.3f}; "
      f"kept {kept.float().mean():.2f} of samples, "
      f"{(~flip[kept]).float().mean():.3f} correctly labelled "
      f"(pool {(~flip).float().mean():.3f})")
