"""Assign whole classes of samples to train/val/test, stratum by stratum.

A class (samples that must share a split, :mod:`.twins`) may hold samples of
several strata. The assignment is a small integer programme (scipy's HiGHS
``milp``), solved to optimality; its objective ranks, from strongest to
weakest:

0. a val and a test sample in every stratum of three or more samples (when
   their fractions are not zero);
1. every split of every stratum within its *window*: one structure of its
   fraction, or the stratum's quota where that is further off;
2. as few samples as possible moved from an existing split (``existing``);
3. val and test of each stratum at their rounded quotas;
4. where a class had members in several existing splits, the later one
   (test over val over train);
5. a seeded random cost per class, so a fresh split is a draw that depends on
   the seed and the class, not on the order or on the other strata.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
_EMPTY, _WINDOW, _MOVE, _QUOTA, _LATER, _RANDOM = 5000.0, 1000.0, 1.0, 0.1, 0.01, 1e-3


def quotas(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """(n_val, n_test) for a stratum of ``n`` samples.

    With three or more samples, val and test get at least one each (when their
    fraction is non-zero), and train keeps at least one.
    """
    _, fv, ft = fractions
    n_val, n_test = round(n * fv), round(n * ft)
    if n >= 3:
        n_val = max(n_val, int(fv > 0))
        n_test = max(n_test, int(ft > 0))
        while n_val + n_test > n - int(fractions[0] > 0):
            if n_val >= n_test and n_val > int(fv > 0):
                n_val -= 1
            elif n_test > int(ft > 0):
                n_test -= 1
            else:
                break
    return n_val, n_test


def window(n: int, fraction: float, quota: int) -> tuple[int, int]:
    """Counts within one structure of ``fraction * n``, widened to hold ``quota``."""
    lo = max(0, math.ceil(fraction * n - 1 - 1e-9))
    hi = math.floor(fraction * n + 1 + 1e-9)
    if fraction == 0:
        lo = hi = 0
    return min(lo, quota), max(hi, quota)


def assign(classes: Sequence[Sequence[int]], strata: Sequence[str],
           existing: Sequence[str | None], fractions: tuple[float, float, float],
           seed: int, keys: Sequence[str]) -> list[str]:
    """The split of every class.

    Parameters
    ----------
    classes : sequence of sequence of int
        Sample indices of each class (a partition).
    strata : sequence of str
        Stratum of every sample.
    existing : sequence of str or None
        Existing split of every sample, or ``None``.
    fractions : (float, float, float)
    seed : int
    keys : sequence of str
        A stable name of every class (its sorted ids): seeds its random cost.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    if not classes:
        return []
    names = sorted(set(strata))
    size, cost = _sizes_and_costs(classes, [names.index(s) for s in strata], existing,
                                  len(names), seed, keys)
    n_c, n_s = size.shape
    # Variables: x[c, p] (3 per class), then five slacks per (stratum, split).
    n_x = 3 * n_c
    penalties = (_WINDOW, _WINDOW, _QUOTA, _QUOTA, _EMPTY)
    obj = np.concatenate([cost.ravel(), np.tile(penalties, 3 * n_s)])
    rows, cols, vals, lo, hi = [], [], [], [], []

    def row(entries: list[tuple[int, float]], low: float, high: float) -> None:
        rows.extend([len(lo)] * len(entries))
        cols.extend(e[0] for e in entries)
        vals.extend(e[1] for e in entries)
        lo.append(low)
        hi.append(high)

    for c in range(n_c):                                      # one split per class
        row([(3 * c + p, 1.0) for p in range(3)], 1.0, 1.0)
    inf = np.inf
    for s in range(n_s):
        n = int(size[:, s].sum())
        q_val, q_test = quotas(n, fractions)
        q = (n - q_val - q_test, q_val, q_test)
        members = np.flatnonzero(size[:, s])
        for p in range(3):
            count = [(3 * c + p, size[c, s]) for c in members]
            w_lo, w_hi = window(n, fractions[p], q[p])
            least = int(p > 0 and n >= 3 and fractions[p] > 0)
            slack = n_x + 5 * (3 * s + p)
            row(count + [(slack, -1.0)], -inf, w_hi)          # over the window
            row(count + [(slack + 1, 1.0)], w_lo, inf)        # under the window
            row(count + [(slack + 2, -1.0)], -inf, q[p])      # above the quota
            row(count + [(slack + 3, 1.0)], q[p], inf)        # below the quota
            row(count + [(slack + 4, 1.0)], least, inf)       # an empty val or test
    n_var = len(obj)
    a = coo_matrix((vals, (rows, cols)), shape=(len(lo), n_var)).tocsr()
    res = milp(obj, constraints=LinearConstraint(a, lo, hi),
               integrality=np.concatenate([np.ones(n_x), np.zeros(n_var - n_x)]),
               bounds=Bounds(np.zeros(n_var),
                             np.concatenate([np.ones(n_x), np.full(n_var - n_x, inf)])),
               options={"mip_rel_gap": 0.0, "time_limit": 300.0})
    if res.x is None:
        raise RuntimeError(f"the split assignment found no solution: {res.message}")
    return [SPLITS[int(np.argmax(x))] for x in res.x[:n_x].reshape(n_c, 3)]


def _sizes_and_costs(classes: Sequence[Sequence[int]], stratum_of: Sequence[int],
                     existing: Sequence[str | None], n_strata: int, seed: int,
                     keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Members of each class per stratum, and each class's cost in each split."""
    size = np.zeros((len(classes), n_strata))
    cost = np.zeros((len(classes), 3))
    split = np.arange(3)
    for c, members in enumerate(classes):
        rng = np.random.default_rng([seed, zlib.crc32(keys[c].encode())])
        cost[c] = _RANDOM * rng.random(3)
        for i in members:
            size[c, stratum_of[i]] += 1
            if existing[i] in SPLITS:
                e = SPLITS.index(existing[i])
                cost[c] += _MOVE * (split != e) + _LATER * (split < e)
    return size, cost
