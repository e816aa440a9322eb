import torch, torch.nn as nn
from robustweights import RecipeConfig, SurrogateRecipe

torch.manual_seed(0)
X = torch.randn(2000, 20); y_true = (X[:, 0] + X[:, 1] > 0).long()
flip = torch.rand(2000) < 0.35                  # 35% of the labels are wrong
y = torch.where(flip, 1 - y_true, y_true)
Xc = torch.randn(100, 20)                       # a small trusted clean set
yc = (Xc[:, 0] + Xc[:, 1] > 0).long()

def net():
    return nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(),
                         nn.Linear(64, 2))
nets = [net(), net()]
opts = [torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9) for n in nets]
# The peer exchange: network k is weighted by a recipe built on the *other* network,
# whose features have not been fitted to k's mistakes. eval_features=True (the
# authors' setting): the recipe runs the peer's own no-grad forward, since the
# training forward is k's.
config = RecipeConfig.authors(warmup_epochs=0, alpha_switch=1000, clean_passes=5)
recipes = [SurrogateRecipe(2, model=nets[1 - k], head=nets[1 - k][3],
                           clean_data=(Xc, yc), config=config) for k in range(2)]
def step(k, loss):                              # yours: AMP, clipping, schedulers...
    opts[k].zero_grad(); loss.backward(); opts[k].step()

for epoch in range(15):
    for k, recipe in enumerate(recipes):
        recipe.start_epoch(epoch)
        nets[k].train()
        for xb, yb in recipe.clean_batches():   # network k's clean passes
            step(k, recipe.clean_loss(nets[k](xb), yb))
    for recipe in recipes:                      # each scores the other network,
        recipe.refresh_prototypes()             # which has trained since
    for idx in torch.randperm(2000).split(100): # the noisy pool
        for k, recipe in enumerate(recipes):
            w = recipe.weights(inputs=X[idx], labels=y[idx])  # scored by the peer
            step(k, recipe.loss(nets[k](X[idx]), y[idx], w))
nets[0].eval()
with torch.no_grad():
    accuracy = (nets[0](X).argmax(1) == y_true).float().mean().item()
    kept = recipes[0].directions(inputs=X, labels=y) > 0  # network 0's kept set
print(f"accuracy on true labels {accuracy:.3f}; "
      f"kept {kept.float().mean():.2f} of samples, "
      f"{(~flip[kept]).float().mean():.3f} correctly labelled "
      f"(pool {(~flip).float().mean():.3f})")
