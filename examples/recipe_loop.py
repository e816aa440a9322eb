import torch, torch.nn as nn
from robustweights import SurrogateRecipe
from robustweights.recipe import mixup, soft_cross_entropy

torch.manual_seed(0)
X = torch.randn(2000, 20); y_true = (X[:, 0] + X[:, 1] > 0).long()
flip = torch.rand(2000) < 0.35                  # 35% of the labels are wrong
y = torch.where(flip, 1 - y_true, y_true)
Xc = torch.randn(100, 20)                       # a small trusted clean set
yc = (Xc[:, 0] + Xc[:, 1] > 0).long()

model = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(),
                      nn.Linear(64, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
recipe = SurrogateRecipe(2, model=model, head=model[3], clean_data=(Xc, yc),
                         alpha_switch=1000)     # the recommended configuration
# (alpha_switch=1000: with 2 classes alpha must stay > 0; see the FBR method page)
def step(loss):                                 # yours: AMP, clipping, schedulers...
    opt.zero_grad(); loss.backward(); opt.step()

Xa, ya = torch.cat([X, Xc]), torch.cat([y, yc])  # one stream: pool + trusted set
trusted = torch.arange(2100) >= 2000
for epoch in range(15):
    recipe.start_epoch(epoch)                   # the schedule
    model.train()
    for xb, yb in recipe.clean_batches():       # clean passes (none by default);
        step(recipe.clean_loss(model(xb), yb))  # at their end: the prototypes
    for idx in torch.randperm(2100).split(100): # the pool and the trusted images
        w = recipe.weights(inputs=Xa[idx], labels=ya[idx],  # FBR weights (eval
                           trusted=trusted[idx])  # forward); trusted: weight 1
        t = recipe.targets(ya[idx], w)          # dropped: pseudo-label, floor or 0
        xm, q, wm = mixup(Xa[idx], t.labels, t.weights, num_classes=2)
        step(soft_cross_entropy(model(xm), q, wm))   # mean of w_i * CE(z_i, q_i)
model.eval()
with torch.no_grad():
    accuracy = (model(X).argmax(1) == y_true).float().mean().item()
    kept = recipe.directions(inputs=X, labels=y) > 0  # FBR's kept set
print(f"accuracy on true labels {accuracy:.3f}; "
      f"kept {kept.float().mean():.2f} of samples, "
      f"{(~flip[kept]).float().mean():.3f} correctly labelled "
      f"(pool {(~flip).float().mean():.3f})")
