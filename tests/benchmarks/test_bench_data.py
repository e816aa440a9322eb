"""benchmarks.cifar_n.data: official formats, checks before parsing, noise, the clean subset."""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n import data as D  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "cifar10n_subset.npz").is_file(),
                                  reason="../shared/data (the real CIFAR-10N subset) is absent")


def _pickled(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _fake_archive(path: Path, *, cifar100: bool = False, n_per_batch: int = 3) -> str:
    """An archive in the official layout (pickled dicts with bytes keys); returns its sha256."""
    rng = np.random.default_rng(0)
    members: dict[str, bytes] = {}
    root = "cifar-100-python" if cifar100 else "cifar-10-batches-py"
    key = b"fine_labels" if cifar100 else b"labels"
    names = ["train", "test"] if cifar100 else [f"data_batch_{i}" for i in range(1, 6)] + [
        "test_batch"]
    for j, name in enumerate(names):
        x = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        x[:, 0] = j  # tag: first red pixel = batch number
        members[f"{root}/{name}"] = _pickled({b"data": x, key: list(range(n_per_batch))})
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reads_official_cifar10_layout(tmp_path: Path) -> None:
    sha = _fake_archive(tmp_path / "c10.tar.gz")
    arr = D.read_cifar_archive(tmp_path / "c10.tar.gz", sha256=sha)
    assert arr["train_images"].shape == (15, 32, 32, 3), "5 batches x 3 images, HWC"
    assert arr["test_images"].shape == (3, 32, 32, 3)
    # Batch order is official order: first red pixel (row 0, col 0, channel 0) tags the batch.
    assert arr["train_images"][:, 0, 0, 0].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [
        4] * 3, "data_batch_1..5 must be concatenated in order"
    assert arr["test_images"][0, 0, 0, 0] == 5, "test_batch is read as the test set"
    np.testing.assert_array_equal(arr["train_index"], np.arange(15))


def test_reads_official_cifar100_layout(tmp_path: Path) -> None:
    sha = _fake_archive(tmp_path / "c100.tar.gz", cifar100=True)
    arr = D.read_cifar_archive(tmp_path / "c100.tar.gz", sha256=sha)
    assert arr["train_images"].shape == (3, 32, 32, 3)
    assert arr["train_labels"].tolist() == [0, 1, 2], "fine_labels are the labels"


def test_channel_planes_become_hwc(tmp_path: Path) -> None:
    path = tmp_path / "c10.tar.gz"
    sha = _fake_archive(path)
    arr = D.read_cifar_archive(path, sha256=sha)
    with tarfile.open(path) as tar:
        f = tar.extractfile("cifar-10-batches-py/data_batch_1")
        assert f is not None
        raw = pickle.loads(f.read(), encoding="bytes")[b"data"]
    # Pixel (row 5, col 7): R at 5*32+7, G at 1024 + that, B at 2048 + that.
    p = 5 * 32 + 7
    assert arr["train_images"][1, 5, 7].tolist() == [raw[1, p], raw[1, 1024 + p],
                                                      raw[1, 2048 + p]]


def test_wrong_checksum_is_rejected_before_any_unpickling(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    _fake_archive(tmp_path / "c10.tar.gz")

    def forbidden(raw: bytes) -> None:
        raise AssertionError("unpickled an unverified archive")

    monkeypatch.setattr(D, "_unpickle_batch", forbidden)
    with pytest.raises(ValueError, match="sha256"):
        D.read_cifar_archive(tmp_path / "c10.tar.gz", sha256="0" * 64)


def test_unknown_archive_without_pin_is_refused(tmp_path: Path) -> None:
    _fake_archive(tmp_path / "mystery.tar.gz")
    with pytest.raises(ValueError, match="never parsed"):
        D.read_cifar_archive(tmp_path / "mystery.tar.gz")


def test_restricted_unpickler_refuses_arbitrary_globals() -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="Refusing"):
        D._unpickle_batch(pickle.dumps({b"data": Evil()}))


def test_verified_download_checks_before_placing(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"official bytes"

    class Resp(io.BytesIO):
        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *a: object) -> None:
            self.close()

    monkeypatch.setattr(D.urllib.request, "urlopen", lambda req, timeout: Resp(payload))
    good = D.Pin("https://example.invalid/f", hashlib.sha256(payload).hexdigest())
    path = D.verified_download("f.bin", tmp_path, good)
    assert path.read_bytes() == payload
    bad = D.Pin("https://example.invalid/g", "1" * 64)
    with pytest.raises(ValueError, match="sha256"):
        D.verified_download("g.bin", tmp_path, bad)
    assert not (tmp_path / "g.bin").exists(), "a file failing verification must not be kept"
    assert not list(tmp_path.glob(".g.bin*")), "no partial download left behind"


def test_npz_round_trip(tmp_path: Path) -> None:
    arrays = {k: np.arange(6, dtype=np.int64) for k in D._NPZ_KEYS}
    arrays["train_images"] = np.zeros((6, 32, 32, 3), np.uint8)
    arrays["test_images"] = np.ones((6, 32, 32, 3), np.uint8)
    D.write_npz(tmp_path / "x.npz", arrays)
    back = D.read_npz(tmp_path / "x.npz")
    for k in D._NPZ_KEYS:
        np.testing.assert_array_equal(back[k], arrays[k], err_msg=k)


def test_human_label_file_loads_with_allow_list_and_checksum(tmp_path: Path) -> None:
    labels = {"clean_label": np.arange(5, dtype=np.int64),
              "worse_label": np.array([1, 1, 2, 3, 4], dtype=np.int64)}
    torch.save(labels, tmp_path / "labels.pt")
    sha = hashlib.sha256((tmp_path / "labels.pt").read_bytes()).hexdigest()
    got = D.load_human_labels(tmp_path / "labels.pt", sha256=sha)
    np.testing.assert_array_equal(got["worse_label"], labels["worse_label"])
    with pytest.raises(ValueError, match="sha256"):
        D.load_human_labels(tmp_path / "labels.pt", sha256="2" * 64)


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTWEIGHTS_DATA", str(tmp_path / "env"))
    dirs = D.data_dirs(tmp_path / "explicit")
    assert dirs[0] == tmp_path / "explicit" and dirs[1] == tmp_path / "env"
    assert dirs[-1] == D.CACHE_DIR
    monkeypatch.delenv("ROBUSTWEIGHTS_DATA")
    assert D.data_dirs()[0] != tmp_path / "env"


@pytest.mark.parametrize(("text", "parsed"), [
    ("worst", ("worst", None)), ("noisy100", ("noisy100", None)), ("sym0.4", ("sym", 0.4)),
    ("symmetric:0.2", ("sym", 0.2)), ("asym-0.4", ("asym", 0.4)), ("asymmetric0.3", ("asym", 0.3)),
])
def test_parse_noise(text: str, parsed: tuple[str, float | None]) -> None:
    assert D.parse_noise(text) == parsed


def test_parse_noise_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="noise"):
        D.parse_noise("worse")


def _toy_images(n: int = 200) -> D.LabeledImages:
    y = np.arange(n, dtype=np.int64) % 10
    x = np.arange(n, dtype=np.uint8).repeat(32 * 32 * 3).reshape(n, 32, 32, 3)  # pixel = index
    return D.LabeledImages("toy", 10, x, y, np.arange(n), x[:10], y[:10],
                           {"clean_label": y, "worse_label": np.where(np.arange(n) % 3 == 0,
                                                                     (y + 1) % 10, y)})


def test_oracle_label_set_is_the_same_split_without_its_wrong_labels() -> None:
    ds = _toy_images()
    noisy = D.build_split(ds, "worst", seed=4, clean_size=20)
    oracle = D.build_split(ds, "oracle-worst", seed=4, clean_size=20)
    torch.testing.assert_close(oracle.clean_images, noisy.clean_images)  # the same trusted set
    right = noisy.pool_labels == noisy.pool_true
    assert 0 < int(right.sum()) < len(right)
    torch.testing.assert_close(oracle.pool_images, noisy.pool_images[right])
    torch.testing.assert_close(oracle.pool_labels, noisy.pool_labels[right])
    assert oracle.noise_rate_pool == 0.0 and oracle.nominal_noise_rate == 0.0
    assert noisy.nominal_noise_rate == D.CIFARN_RATES["worst"]
    sym = D.build_split(ds, "sym0.5", seed=4, clean_size=20)
    assert len(D.build_split(ds, "oracle-sym0.5", seed=4, clean_size=20).pool_labels) == int(
        (sym.pool_labels == sym.pool_true).sum()), "synthetic noise, drawn with the same seed"
    assert D.split_oracle("worst") == ("worst", False)
    with pytest.raises(ValueError, match=r"oracle-.*'worse'"):
        D.split_oracle("oracle-worse")


def test_symmetric_noise_has_exact_rate_and_never_keeps_the_class() -> None:
    y = np.arange(1000) % 10
    noisy = D.symmetric_noise(y, 0.4, 10, seed=3)
    assert (noisy != y).sum() == 400, "exactly round(rate * N) samples are flipped"
    np.testing.assert_array_equal(noisy, D.symmetric_noise(y, 0.4, 10, seed=3))


def test_asymmetric_noise_follows_the_class_maps() -> None:
    y = np.repeat(np.arange(10), 100)
    noisy = D.asymmetric_noise(y, 1.0, 10, seed=0)
    expect = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    for c in range(10):
        assert set(noisy[y == c]) == {expect.get(c, c)}, f"class {c}"
    y100 = np.arange(100)
    n100 = D.asymmetric_noise(y100, 1.0, 100, seed=0)
    assert n100[:6].tolist() == [1, 2, 3, 4, 0, 6], "next class within blocks of 5, circular"


def test_clean_subset_count_fraction_stratified_and_seeded() -> None:
    y = np.repeat(np.arange(10), 50)
    idx = D.draw_clean_subset(y, 100, 10, seed=1)
    assert len(idx) == 100 and np.bincount(y[idx]).tolist() == [10] * 10
    assert len(D.draw_clean_subset(y, 0.04, 10, seed=1)) == 20, "fraction of the train set"
    np.testing.assert_array_equal(idx, D.draw_clean_subset(y, 100, 10, seed=1))
    assert not np.array_equal(idx, D.draw_clean_subset(y, 100, 10, seed=2))
    with pytest.raises(ValueError, match="clean subset size"):
        D.draw_clean_subset(y, 0, 10, seed=0)


@needs_shared
def test_shared_subset_noise_rates_and_split() -> None:
    ds = D.load_dataset("cifar10n-subset")
    assert ds.train_images.shape == (5170, 32, 32, 3) and ds.test_images.shape == (508, 32, 32, 3)
    rates = {n: float(np.mean(D.noisy_labels(ds, n) != ds.train_labels))
             for n in ("worst", "aggre", "rand1", "clean")}
    assert rates["worst"] == pytest.approx(0.403, abs=1e-3), rates
    assert rates["aggre"] == pytest.approx(0.089, abs=1e-3), rates
    assert rates["rand1"] == pytest.approx(0.174, abs=1e-3), rates
    assert rates["clean"] == 0.0
    split = D.build_split(ds, "worst", seed=0, clean_size=250)
    assert split.pool_images.shape[0] + split.clean_images.shape[0] == 5170
    assert split.noise_rate_pool == pytest.approx(float((split.pool_labels != split.pool_true)
                                                        .float().mean()))


@needs_shared
def test_cifar100n_label_file_loads() -> None:
    labels = D.load_human_labels(SHARED / "CIFAR-100_human.pt")
    assert labels["noisy_label"].shape == (50000,)
    rate = float(np.mean(labels["noisy_label"] != labels["clean_label"]))
    assert rate == pytest.approx(0.402, abs=2e-3), rate


def test_full_dataset_builds_npz_cache_from_official_files(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    # Fake official files under their official names, with pins replaced by their digests.
    sha = _fake_archive(tmp_path / "cifar-10-python.tar.gz")
    labels = np.tile(np.arange(3), 5).astype(np.int64)  # _fake_archive: labels 0, 1, 2 per batch
    human = {"clean_label": labels, "worse_label": (labels + 1) % 10,
             "aggre_label": labels, "random_label1": labels}
    torch.save(human, tmp_path / "CIFAR-10_human.pt")
    pt_sha = hashlib.sha256((tmp_path / "CIFAR-10_human.pt").read_bytes()).hexdigest()
    monkeypatch.setitem(D.PINNED, "cifar-10-python.tar.gz", D.Pin("https://invalid/a", sha))
    monkeypatch.setitem(D.PINNED, "CIFAR-10_human.pt", D.Pin("https://invalid/b", pt_sha))
    ds = D.load_dataset("cifar10n", tmp_path)
    assert (tmp_path / "cifar10n.npz").is_file(), "the parsed archive is cached as .npz"
    assert ds.train_images.shape == (15, 32, 32, 3)
    assert float(np.mean(D.noisy_labels(ds, "worst") != ds.train_labels)) == 1.0
    (tmp_path / "cifar-10-python.tar.gz").unlink()  # the cache alone now suffices
    again = D.load_dataset("cifar10n", tmp_path)
    np.testing.assert_array_equal(again.train_images, ds.train_images)


def test_missing_files_say_where_they_were_looked_for(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "data_dirs", lambda data_dir=None: [tmp_path])
    with pytest.raises(FileNotFoundError, match="--download"):
        D.load_dataset("cifar10n", tmp_path)
