"""Group advantages against a NumPy oracle (hypothesis), plus the degenerate flags and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from medix_r1 import MedixInputError
from medix_r1.advantages import degenerate_groups, group_advantages, group_stats


def oracle(rewards, ids, scale, eps):
    r = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(r)
    valid_all = r[~np.isnan(r)]
    batch_std = valid_all.std(ddof=1) if valid_all.size >= 2 else 0.0
    order = list(dict.fromkeys(ids))
    degenerate = []
    for g in order:
        idx = np.array([i for i, x in enumerate(ids) if x == g])
        vals = r[idx]
        ok = ~np.isnan(vals)
        v = vals[ok]
        flat = v.size < 2 or v.std(ddof=1) <= 1e-12 * max(1.0, abs(v.mean()))
        degenerate.append(bool(flat))
        if flat:
            continue
        mean = v.mean()
        denom = {"group": v.std(ddof=1) + eps, "batch": batch_std + eps, "none": 1.0}[scale]
        out[idx[ok]] = (v - mean) / denom
    return out, np.array(degenerate)


values = st.one_of(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, np.nan]), st.floats(-5, 5, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.integers(0, 8), st.data(), st.sampled_from(["group", "batch", "none"]))
def test_fixed_groups_match_oracle(g, n_groups, data, scale):
    r = data.draw(st.lists(values, min_size=g * n_groups, max_size=g * n_groups))
    ids = [i // g for i in range(len(r))]
    want, degen = oracle(r, ids, scale, 1e-6)
    got = group_advantages(r, group_size=g, scale=scale)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert degenerate_groups(r, group_size=g).tolist() == degen.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["p1", "p2", "p3"]), values), max_size=20))
def test_group_ids_any_order(pairs):
    ids = [p[0] for p in pairs]
    r = [p[1] for p in pairs]
    want, degen = oracle(r, ids, "group", 1e-6)
    np.testing.assert_allclose(group_advantages(r, group_ids=ids), want, rtol=1e-9, atol=1e-9)
    assert group_stats(r, group_ids=ids).degenerate.tolist() == degen.tolist()


def test_trl_semantics_and_stats():
    r = [1.0, 0.0, 0.0, 0.0, 0.5, 0.5, np.nan, 0.5]
    s = group_stats(r, group_size=4)
    std = np.std([1.0, 0, 0, 0], ddof=1)
    assert s.advantages[0] == pytest.approx(0.75 / (std + 1e-6))
    assert s.advantages[4:].tolist() == [0.0] * 4
    assert s.degenerate.tolist() == [False, True]
    assert s.count.tolist() == [4, 3]
    assert s.group_index.tolist() == [0] * 4 + [1] * 4
    assert s.degenerate_fraction == 0.5


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.tensor([1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(group_advantages(t, group_size=2), group_advantages(t.tolist(), group_size=2))


def test_bad_input():
    with pytest.raises(MedixInputError, match="cannot be split into groups of group_size=2"):
        group_advantages([1.0, 2.0, 3.0], group_size=2)
    with pytest.raises(ValueError, match="scale must be one of"):
        group_advantages([1.0], group_size=1, scale="std")
    with pytest.raises(MedixInputError, match=r"rewards\[1\] is inf"):
        group_advantages([1.0, np.inf], group_size=2)
    with pytest.raises(ValueError, match="group_ids has 1 entries but rewards has 2"):
        group_advantages([1.0, 2.0], group_ids=[0])
    with pytest.raises(MedixInputError, match="give group_size"):
        group_advantages([1.0, 2.0])
    with pytest.raises(TypeError, match="rewards must be a 1-D sequence of numbers"):
        group_advantages(["a", "b"], group_size=2)
    with pytest.raises(ValueError, match="must be 1-D"):
        group_advantages([[1.0, 2.0]], group_size=2)
