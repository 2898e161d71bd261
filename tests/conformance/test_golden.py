"""Golden outputs of the reference scenes (tests/assets/golden, made by the reference backend with
tests/assets/make_golden.py): the reference backend must reproduce them exactly up to storage
precision, the other backends within the cross-backend tolerances of the README."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ASSETS = Path(__file__).resolve().parents[1] / "assets"
sys.path.insert(0, str(ASSETS))
import make_golden  # noqa: E402
import meshes  # noqa: E402
import refcheck  # noqa: E402

F16 = 2e-3  # float16 storage of values in [-1, 1]: rounding ≤ 4.9e-4; margin for the sums in interpolate


def _load(name):
    with np.load(ASSETS / "golden" / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", meshes.SCENES)
def test_golden_scene(backend, name):
    gold = _load(name)
    got = make_golden.render(name, backend.make_context(), backend.device)
    exact = backend.name == "reference"
    ids_g, ids = torch.from_numpy(gold["ids"]).long(), torch.from_numpy(got["ids"]).long()
    mismatch = (ids != ids_g).double().mean().item()
    if exact:
        assert mismatch == 0.0, f"{name}: {mismatch:.3%} of pixels changed triangle"
    else:
        assert mismatch <= refcheck.ID_MISMATCH_FRACTION, f"{name}: {mismatch:.3%} of pixels changed triangle"
    same = ((ids == ids_g) & (ids > 0)).numpy()
    assert same.sum() > 50
    uv_tol = F16 if exact else refcheck.BARY_ABS
    d_uv = np.abs(got["uv"] - gold["uv"].astype(np.float32))[same]
    assert np.quantile(d_uv, 0.999) <= uv_tol and d_uv.max() <= (F16 if exact else refcheck.BARY_ABS_MAX)
    d_z = np.abs(got["z"] - gold["z"])[same]
    assert d_z.max() <= (1e-6 if exact else refcheck.DEPTH_ABS)
    g_db = gold["db"].astype(np.float32)[same]
    bad = np.abs(got["db"][same] - g_db) > (refcheck.DB_REL if not exact else 1e-3) * np.abs(g_db) + (
        F16 if exact else refcheck.DB_ABS)
    assert bad.mean() <= (0.0 if exact else 1e-3)
    for key in ("color", "color_da"):
        d = np.abs(got[key] - gold[key].astype(np.float32))[same]
        assert np.quantile(d, 0.999) <= (F16 if exact else 10 * F16), f"{name}: {key} differs by {d.max():.3g}"
    d_aa = np.abs(got["aa"] - gold["aa"].astype(np.float32))
    if exact:
        assert d_aa.max() <= F16
    else:
        assert d_aa.mean() <= 1e-2, f"{name}: antialiased image differs on average by {d_aa.mean():.3g}"
    if "peel_ids" in gold:
        for k in range(len(gold["peel_ids"])):
            m = (got["peel_ids"][k] != gold["peel_ids"][k]).mean()
            assert m <= (0.0 if exact else refcheck.ID_MISMATCH_FRACTION), f"peel layer {k}: {m:.3%}"
