"""The micro-benchmark at smoke size: it runs, writes what it promises, and computes the right
thing (the library's FBR and L2RW agree with the references the benchmark times them against)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import micro  # noqa: E402
from benchmarks.micro.harness import rankdata, spearman  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro")
    res = micro.main(["--smoke", "--no-progress", "--out", str(out),
                      "--figures", str(out / "fig")])
    return out, res


def test_smoke_writes_json_markdown_and_figures(smoke):
    out, res = smoke
    data = json.loads((out / "micro.json").read_text())
    assert set(micro.SECTIONS) <= set(data), f"missing sections: {set(micro.SECTIONS) - set(data)}"
    for key in ("command", "machine", "wall_s", "sizes"):
        assert key in data["meta"], f"meta lacks `{key}`"
    for key in ("cpu_model", "torch", "torch_threads", "device"):
        assert key in data["meta"]["machine"], f"machine lacks `{key}`"
    row = data["fbr_sweep"][0]
    for key in ("B", "D", "C", "M", "ours_us", "ours_novalidate_us", "ours_clean_per_call_us",
                "reference_us", "speedup", "ours_peak_bytes", "reference_peak_bytes"):
        assert key in row, f"fbr_sweep row lacks `{key}`"
    for key in ("fbr_fraction_of_step", "plain_step_ms", "fbr_weights_us", "peak_bytes"):
        assert key in data["fbr_vs_step"], f"fbr_vs_step lacks `{key}`"
    for key in ("jvp_total", "classic_total", "jvp_weights", "last_layer_weights"):
        assert key in data["l2rw"]["x_plain_step"], f"l2rw.x_plain_step lacks `{key}`"
    assert "spearman_scores_median" in data["spearman"], "spearman lacks its median"
    assert {"fbr_weights_le_2pct_of_step", "l2rw_jvp_total_le_1.7x_step"} <= set(
        data["targets"]), "targets not evaluated"
    md = (out / "micro.md").read_text()
    assert "Command: `python -m benchmarks.micro --smoke" in md, "command not printed"
    assert "| B | D | C | M |" in md, "FBR table missing"
    for name in ("micro_fbr_scaling.png", "micro_cost_per_step.png"):
        assert (out / "fig" / name).stat().st_size > 0, f"{name} not written"
    assert res["meta"]["wall_s"] < 120, f"smoke run took {res['meta']['wall_s']:.0f} s"


def test_smoke_fbr_matches_gram_reference(smoke):
    _, res = smoke
    c = res["checks"]["fbr_float64"]
    assert c["agree"], f"FBR vs Gram reference (float64) disagree: {c}"
    assert any(case["zero_weights"] > 0 for case in c["cases"]), "checks never drop a sample"
    for row in res["fbr_sweep"] + res["fbr_scaling"]["vs_M"] + res["fbr_scaling"]["vs_B"]:
        assert row["weights_differing_1e-3"] == 0, f"float32 weights disagree: {row}"


def test_smoke_l2rw_jvp_matches_lookahead(smoke):
    _, res = smoke
    rel = res["l2rw"]["jvp_vs_classic_max_rel_diff"]
    assert rel < 1e-3, f"JVP scores vs classic lookahead: relative difference {rel:.2e}"


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 50).astype(float)  # ties
    b = a + rng.normal(size=50)
    np.testing.assert_allclose(rankdata(a), stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5))), "constant input must give NaN"
