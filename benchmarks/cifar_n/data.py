"""CIFAR-10N / CIFAR-100N data: official formats, verified downloads, a .npz cache, label noise
and the trusted clean subset.

Formats
-------
* The official CIFAR-10/100 *python* archives (``cifar-10-python.tar.gz``,
  ``cifar-100-python.tar.gz``): tar.gz files of pickled batches. They are only ever parsed after
  the archive's sha256 matched the pinned value, and even then through a restricted unpickler
  that resolves nothing but the few NumPy globals the batches need.
* CIFAR-N's label files ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt`` (Wei et al., ICLR 2022):
  torch-saved dicts of NumPy arrays over the official train order. They are loaded with
  ``torch.load(weights_only=True)`` and an explicit allow-list of NumPy globals, after a sha256
  check when the file was downloaded or a pin is known.
* The cache: one ``.npz`` per dataset with ``train_images`` (N, 32, 32, 3) uint8 HWC RGB,
  ``train_labels``, ``train_index`` (position in the official 50,000-image train order),
  ``test_images``, ``test_labels``, ``test_index``: the format of the shared
  ``cifar10n_subset.npz``, which this module reads as is.

Where data is looked for (first hit wins): an explicit ``data_dir`` argument, the environment
variable ``ROBUSTWEIGHTS_DATA``, ``../shared/data`` next to the repository root when present,
then the download cache ``~/.cache/robustweights``.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = [
    "CIFARN_RATES",
    "NOISE_KEYS",
    "ORACLE_PREFIX",
    "PINNED",
    "DataSplit",
    "LabeledImages",
    "asymmetric_noise",
    "build_split",
    "data_dirs",
    "draw_clean_subset",
    "find_file",
    "load_dataset",
    "load_human_labels",
    "noisy_labels",
    "parse_noise",
    "read_cifar_archive",
    "read_npz",
    "sha256_file",
    "split_oracle",
    "symmetric_noise",
    "verified_download",
    "write_npz",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path.home() / ".cache" / "robustweights"


@dataclass(frozen=True)
class Pin:
    """Where a file comes from and the digest it must have."""

    url: str
    sha256: str
    md5: str | None = None  # the digest the official site publishes, kept for cross-checking
    size: int | None = None


#: Official locations and pinned digests. The CIFAR sha256 values match the MD5s published on
#: https://www.cs.toronto.edu/~kriz/cifar.html (c58f3010... and eb9058c3...) and the sha256 pins
#: used by Keras' ``cifar10.load_data`` / ``cifar100.load_data``. The CIFAR-N sha256 values are
#: those of the files released at github.com/UCSC-REAL/cifar-10-100n (recorded in
#: ``shared/data/README.md``).
PINNED: dict[str, Pin] = {
    "cifar-10-python.tar.gz": Pin(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        md5="c58f30108f718f92721af3b95e74349a", size=170_498_071),
    "cifar-100-python.tar.gz": Pin(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        md5="eb9058c3a382ffc7106e4002c42a8d85", size=169_001_437),
    "CIFAR-10_human.pt": Pin(
        "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-10_human.pt",
        "873e69c39cb9b5e97fb6bae2d60bb59b38a5cbc31d2b868f7903dcb2b9dd2310"),
    "CIFAR-100_human.pt": Pin(
        "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-100_human.pt",
        "bd2d80409754d420292d622e15e25248ba21e37d27429efac49c8da723f44394"),
}

#: CIFAR-N noise type -> key in the human label file.
NOISE_KEYS: dict[str, str] = {
    "clean": "clean_label", "aggre": "aggre_label", "worst": "worse_label",
    "rand1": "random_label1", "rand2": "random_label2", "rand3": "random_label3",
    "noisy100": "noisy_label",
}

#: Noise rates of the full CIFAR-N training sets (Wei et al. 2022, Table 1): what a user knows
#: in advance, used e.g. as Co-teaching's forget rate.
CIFARN_RATES: dict[str, float] = {
    "clean": 0.0, "aggre": 0.0903, "rand1": 0.1723, "rand2": 0.1812, "rand3": 0.1764,
    "worst": 0.4021, "noisy100": 0.4020,
}

#: Dataset name -> (cache file, python archive, label file, number of classes).
DATASETS: dict[str, tuple[str, str | None, str, int]] = {
    "cifar10n-subset": ("cifar10n_subset.npz", None, "CIFAR-10_human.pt", 10),
    "cifar10n": ("cifar10n.npz", "cifar-10-python.tar.gz", "CIFAR-10_human.pt", 10),
    "cifar100n": ("cifar100n.npz", "cifar-100-python.tar.gz", "CIFAR-100_human.pt", 100),
}

_NPZ_KEYS = ("train_images", "train_labels", "train_index", "test_images", "test_labels",
             "test_index")


# --------------------------------------------------------------------------- locations
def data_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories searched for data files, in order of precedence."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    env = os.environ.get("ROBUSTWEIGHTS_DATA")
    if env:
        dirs.append(Path(env))
    shared = REPO_ROOT.parent / "shared" / "data"
    if shared.is_dir():
        dirs.append(shared)
    dirs.append(CACHE_DIR)
    return dirs


def find_file(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first existing ``name`` in :func:`data_dirs`, or None."""
    for d in data_dirs(data_dir):
        if (d / name).is_file():
            return d / name
    return None


# --------------------------------------------------------------------------- verification
def sha256_file(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike[str], sha256: str) -> None:
    """Raise ``ValueError`` unless the file's sha256 is ``sha256``."""
    got = sha256_file(path)
    if got != sha256.lower():
        raise ValueError(f"Expected `{Path(path).name}` to have sha256 {sha256}, but got {got}: "
                         "the file is corrupt or not the official release; delete it and retry")


def verified_download(name: str, dest_dir: str | os.PathLike[str] | None = None,
                      pin: Pin | None = None) -> Path:
    """Download a pinned file into ``dest_dir`` (default the cache), verifying its sha256
    before it is moved into place. A file already there is verified again, never trusted."""
    pin = pin or PINNED[name]
    dest_dir = Path(dest_dir) if dest_dir is not None else CACHE_DIR
    dest = dest_dir / name
    if dest.is_file():
        verify(dest, pin.sha256)
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.", suffix=".part")
    try:
        req = urllib.request.Request(pin.url, headers={"User-Agent": "robustweights-benchmarks"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=60) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        verify(tmp, pin.sha256)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _locate(name: str, data_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    path = find_file(name, data_dir)
    if path is not None:
        if name in PINNED:
            verify(path, PINNED[name].sha256)
        return path
    if not download:
        raise FileNotFoundError(
            f"Expected `{name}` in one of {[str(d) for d in data_dirs(data_dir)]}, but found none "
            "(pass download=True / --download to fetch it from its official location)")
    return verified_download(name, Path(data_dir) if data_dir is not None else None)


# --------------------------------------------------------------------------- parsers
class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the NumPy globals a CIFAR batch needs; anything else is an error."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"Refusing to load global {module}.{name} from a CIFAR "
                                         "batch")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct  # type: ignore[attr-defined]
        if name == "encode":
            return codecs.encode
        return getattr(np, name)


def _unpickle_batch(raw: bytes) -> dict[str, Any]:
    obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def read_cifar_archive(path: str | os.PathLike[str], sha256: str | None = None
                       ) -> dict[str, np.ndarray]:
    """Parse an official CIFAR-10/100 python archive into the .npz layout.

    The archive's sha256 is checked *before* anything in it is parsed (``sha256`` defaults to
    the pin of the official file with the same name; pass it for a renamed or test archive).
    Batches are read straight from the tar stream, never extracted to disk.

    Returns:
        A dict with the :data:`_NPZ_KEYS` keys (HWC uint8 images, int64 labels and indices).
    """
    path = Path(path)
    pin = sha256 or (PINNED[path.name].sha256 if path.name in PINNED else None)
    if pin is None:
        raise ValueError(f"Expected a `sha256` for {path.name}: no pin is known for that name, "
                         "and unverified archives are never parsed")
    verify(path, pin)
    with tarfile.open(path, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def batch(name: str) -> dict[str, Any]:
            if name not in members:
                raise ValueError(f"Expected member `{name}` in {path.name}, but it is missing")
            f = tar.extractfile(members[name])
            if f is None:
                raise ValueError(f"Expected `{name}` in {path.name} to be a regular file")
            return _unpickle_batch(f.read())

        if "data_batch_1" in members:  # CIFAR-10
            train = [batch(f"data_batch_{i}") for i in range(1, 6)]
            test = batch("test_batch")
            key = "labels"
        else:  # CIFAR-100
            train, test, key = [batch("train")], batch("test"), "fine_labels"
    x_train = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in train])
    y_train = np.concatenate([np.asarray(b[key], dtype=np.int64) for b in train])
    x_test = np.asarray(test["data"], dtype=np.uint8)
    y_test = np.asarray(test[key], dtype=np.int64)

    def hwc(x: np.ndarray) -> np.ndarray:  # rows are 3072 = 3 x 32 x 32 planes (R, G, B)
        return np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))

    return {"train_images": hwc(x_train), "train_labels": y_train,
            "train_index": np.arange(len(y_train), dtype=np.int64),
            "test_images": hwc(x_test), "test_labels": y_test,
            "test_index": np.arange(len(y_test), dtype=np.int64)}


def _numpy_safe_globals() -> list[Any]:
    from numpy._core.multiarray import _reconstruct  # type: ignore[attr-defined]

    dtypes = [type(np.dtype(t)) for t in (np.int64, np.int32, np.uint8, np.float32, np.float64)]
    return [(_reconstruct, "numpy.core.multiarray._reconstruct"), _reconstruct, np.ndarray,
            np.dtype, codecs.encode, *dtypes]


def load_human_labels(path: str | os.PathLike[str], sha256: str | None = None
                      ) -> dict[str, np.ndarray]:
    """Load a CIFAR-N label file without running arbitrary pickle code.

    ``torch.load(weights_only=True)`` with an allow-list of the NumPy globals these files use.
    The sha256 is checked first when given or when the file name has a pin.

    Returns:
        ``{key: int64 array}`` for every array-valued key (e.g. ``worse_label``).
    """
    path = Path(path)
    pin = sha256 or (PINNED[path.name].sha256 if path.name in PINNED else None)
    if pin is not None:
        verify(path, pin)
    with torch.serialization.safe_globals(_numpy_safe_globals()):
        raw = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(raw, dict):
        raise ValueError(f"Expected {path.name} to hold a dict of label arrays, but got "
                         f"{type(raw).__name__}")
    return {k: np.asarray(v, dtype=np.int64) for k, v in raw.items()
            if isinstance(v, (np.ndarray, torch.Tensor)) and np.asarray(v).ndim == 1}


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a dataset cache (no pickle: ``allow_pickle=False``) and check its keys."""
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in _NPZ_KEYS if k not in z.files]
        if missing:
            raise ValueError(f"Expected keys {list(_NPZ_KEYS)} in {Path(path).name}, but "
                             f"{missing} are missing")
        return {k: z[k] for k in z.files}


def write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Write a dataset cache atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part.npz")
    np.savez(tmp, **{k: arrays[k] for k in _NPZ_KEYS})  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- datasets
@dataclass
class LabeledImages:
    """A dataset in memory: the .npz arrays plus its CIFAR-N label sets over ``train_index``."""

    name: str
    num_classes: int
    train_images: np.ndarray
    train_labels: np.ndarray
    train_index: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    human: dict[str, np.ndarray]  # key -> labels over the *official* order (index with train_index)
    source: str = ""


def load_dataset(name: str = "cifar10n-subset", data_dir: str | os.PathLike[str] | None = None,
                 *, download: bool = False, limit_train: int | None = None,
                 limit_test: int | None = None) -> LabeledImages:
    """Load a dataset by name: ``cifar10n-subset`` (the shared 5,170-image subset, the default
    offline data), ``cifar10n`` or ``cifar100n`` (the full sets: from the .npz cache, else built
    from the official archive, downloaded and verified when ``download``).

    Args:
        limit_train, limit_test: keep only the first so many images (smoke tests).
    """
    if name not in DATASETS:
        raise ValueError(f"Expected `name` to be one of {sorted(DATASETS)}, but got {name!r}")
    cache_name, archive, label_file, num_classes = DATASETS[name]
    cached = find_file(cache_name, data_dir)
    if cached is not None:
        arrays, source = read_npz(cached), str(cached)
    elif archive is None:
        raise FileNotFoundError(
            f"Expected `{cache_name}` in one of {[str(d) for d in data_dirs(data_dir)]}, but "
            "found none (set ROBUSTWEIGHTS_DATA or pass --data-dir)")
    else:
        archive_path = _locate(archive, data_dir, download)
        arrays = read_cifar_archive(archive_path)
        dest = (Path(data_dir) if data_dir is not None else CACHE_DIR) / cache_name
        try:
            write_npz(dest, arrays)
        except OSError:  # a read-only data dir: the cache is an optimisation only
            write_npz(CACHE_DIR / cache_name, arrays)
        source = str(archive_path)
    human = load_human_labels(_locate(label_file, data_dir, download))
    ds = LabeledImages(name, num_classes, arrays["train_images"], arrays["train_labels"],
                       arrays["train_index"], arrays["test_images"], arrays["test_labels"],
                       human, source)
    clean_key = "clean_label"
    if clean_key in human and not np.array_equal(human[clean_key][ds.train_index],
                                                 ds.train_labels):
        raise ValueError(f"Expected the train labels of {source} to equal CIFAR-N's clean_label "
                         "at train_index, but they differ: wrong order or wrong label file")
    if limit_train is not None:
        ds.train_images, ds.train_labels, ds.train_index = (
            ds.train_images[:limit_train], ds.train_labels[:limit_train],
            ds.train_index[:limit_train])
    if limit_test is not None:
        ds.test_images, ds.test_labels = ds.test_images[:limit_test], ds.test_labels[:limit_test]
    return ds


# --------------------------------------------------------------------------- label noise
#: Prefix of a label set whose wrongly labelled pool samples are removed: ``"oracle-worst"`` is
#: the *worst* labels after a perfect filter, the most any sample selection could keep.
ORACLE_PREFIX = "oracle-"


_SYNTH = re.compile(r"^(sym|symmetric|asym|asymmetric)[-_:@]?([0-9]*\.?[0-9]+)$")


def parse_noise(noise: str) -> tuple[str, float | None]:
    """``"worst"`` -> ("worst", None); ``"sym0.4"``, ``"symmetric:0.4"`` -> ("sym", 0.4);
    ``"asym-0.4"`` -> ("asym", 0.4)."""
    if noise in NOISE_KEYS:
        return noise, None
    m = _SYNTH.match(noise)
    if m is None:
        raise ValueError(f"Expected `noise` to be one of {sorted(NOISE_KEYS)} or "
                         f"sym<rate>/asym<rate>, optionally after {ORACLE_PREFIX!r}, but got "
                         f"{noise!r}")
    rate = float(m.group(2))
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Expected the noise rate in [0, 1], but got {rate}")
    return ("sym" if m.group(1).startswith("sym") else "asym"), rate


def symmetric_noise(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """Exactly ``round(rate * N)`` samples, drawn by ``seed``, get a uniformly random *other*
    class; the noise rate is therefore exactly ``rate``."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    flip = rng.choice(len(labels), size=round(rate * len(labels)), replace=False)
    shift = rng.integers(1, num_classes, size=len(flip))
    out[flip] = (labels[flip] + shift) % num_classes
    return out


#: CIFAR-10 asymmetric flips (Patrini et al. 2017): truck->automobile, bird->airplane,
#: deer->horse, cat<->dog.
CIFAR10_ASYM = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def asymmetric_noise(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """Class-dependent flips, each sample of a source class flipped with probability ``rate``.

    CIFAR-10: :data:`CIFAR10_ASYM`. CIFAR-100 (and any C divisible by 5): the next class within
    its block of 5 consecutive classes, circularly, as in the Co-teaching / ELR / FINE code.
    """
    rng = np.random.default_rng(seed)
    if num_classes == 10:
        target = np.arange(10)
        for s, t in CIFAR10_ASYM.items():
            target[s] = t
    elif num_classes % 5 == 0:
        c = np.arange(num_classes)
        target = (c // 5) * 5 + (c % 5 + 1) % 5
    else:
        raise ValueError(f"Expected 10 classes or a multiple of 5 for asymmetric noise, but got "
                         f"{num_classes}")
    flip = (rng.random(len(labels)) < rate) & (target[labels] != labels)
    out = labels.copy()
    out[flip] = target[labels[flip]]
    return out


def split_oracle(noise: str) -> tuple[str, bool]:
    """``"oracle-worst"`` -> ("worst", True); ``"worst"`` -> ("worst", False)."""
    if noise.startswith(ORACLE_PREFIX):
        inner = noise[len(ORACLE_PREFIX):]
        parse_noise(inner)  # names the problem if the inner label set is unknown
        return inner, True
    return noise, False


def noisy_labels(ds: LabeledImages, noise: str, seed: int = 0) -> np.ndarray:
    """The training labels of ``ds`` under a CIFAR-N noise type or a synthetic noise (an
    ``oracle-`` label set has the labels of the set it names)."""
    kind, rate = parse_noise(split_oracle(noise)[0])
    if rate is None:
        key = NOISE_KEYS[kind]
        if key not in ds.human:
            raise ValueError(f"Expected noise type {noise!r} to exist for {ds.name}, but its "
                             f"label file has only {sorted(ds.human)}")
        return ds.human[key][ds.train_index].astype(np.int64)
    fn = symmetric_noise if kind == "sym" else asymmetric_noise
    return fn(ds.train_labels, rate, ds.num_classes, seed)


def nominal_noise_rate(noise: str) -> float:
    """The noise rate a user knows in advance: CIFAR-N's published rate or the synthetic rate
    (0 for an ``oracle-`` label set: its pool holds only correct labels)."""
    noise, oracle = split_oracle(noise)
    if oracle:
        return 0.0
    kind, rate = parse_noise(noise)
    return CIFARN_RATES[kind] if rate is None else rate


# --------------------------------------------------------------------------- trusted subset
def draw_clean_subset(true_labels: np.ndarray, size: int | float, num_classes: int, seed: int,
                      *, stratified: bool = True) -> np.ndarray:
    """Indices of the trusted clean subset, fixed by ``seed``.

    Args:
        size: a count (int >= 1) or a fraction of the training set (float in (0, 1)).
        stratified: equal counts per class (as the meta sets of L2RW / MW-Net), the remainder
            going to randomly chosen classes; otherwise a uniform draw.

    Returns:
        Sorted int64 indices into the training set.
    """
    n = len(true_labels)
    count = round(size * n) if isinstance(size, float) and size < 1 else int(size)
    if not 1 <= count < n:
        raise ValueError(f"Expected the clean subset size in [1, {n - 1}], but got {size!r}")
    rng = np.random.default_rng(seed)
    if not stratified:
        return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)
    per = np.full(num_classes, count // num_classes)
    per[rng.choice(num_classes, size=count % num_classes, replace=False)] += 1
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(true_labels == c)
        if len(members) < per[c]:
            raise ValueError(f"Expected at least {per[c]} samples of class {c} for a stratified "
                             f"clean subset, but got {len(members)}")
        picks.append(rng.choice(members, size=per[c], replace=False))
    return np.sort(np.concatenate(picks)).astype(np.int64)


@dataclass
class DataSplit:
    """The tensors one run trains on: the noisy pool, the trusted clean subset and the test set.

    Images are uint8 NHWC tensors on the training device; ``pool_true`` is kept only to score
    selections (precision / recall of kept samples), never shown to a method.
    """

    num_classes: int
    pool_images: torch.Tensor
    pool_labels: torch.Tensor
    pool_true: torch.Tensor
    clean_images: torch.Tensor
    clean_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    noise: str
    noise_rate_pool: float  # measured on the pool
    nominal_noise_rate: float  # published / requested rate


def build_split(ds: LabeledImages, noise: str, seed: int, clean_size: int | float,
                device: torch.device | str = "cpu", *, stratified: bool = True) -> DataSplit:
    """Noisy labels + trusted clean subset (true labels, removed from the pool) for one seed.
    Under an ``oracle-`` label set the pool also loses its wrongly labelled samples (the same
    trusted subset and the same correct samples as the label set it names)."""
    noisy = noisy_labels(ds, noise, seed)
    clean_idx = draw_clean_subset(ds.train_labels, clean_size, ds.num_classes, seed,
                                  stratified=stratified)
    pool = np.setdiff1d(np.arange(len(noisy)), clean_idx)
    if split_oracle(noise)[1]:
        pool = pool[noisy[pool] == ds.train_labels[pool]]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return DataSplit(
        ds.num_classes, t(ds.train_images[pool]), t(noisy[pool]), t(ds.train_labels[pool]),
        t(ds.train_images[clean_idx]), t(ds.train_labels[clean_idx]),
        t(ds.test_images), t(ds.test_labels), noise,
        float(np.mean(noisy[pool] != ds.train_labels[pool])), nominal_noise_rate(noise))
