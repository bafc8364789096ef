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
from typing import Sequence

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
    s_index = {s: k for k, s in enumerate(names)}
    n_c, n_s = len(classes), len(names)
    size = np.zeros((n_c, n_s))                     # members of class c in stratum s
    cost = np.zeros((n_c, 3))
    for c, members in enumerate(classes):
        rng = np.random.default_rng([seed, zlib.crc32(keys[c].encode())])
        cost[c] = _RANDOM * rng.random(3)
        for i in members:
            size[c, s_index[strata[i]]] += 1
            e = existing[i]
            if e in SPLITS:
                cost[c] += _MOVE * (np.arange(3) != SPLITS.index(e))
                cost[c] += _LATER * (np.arange(3) < SPLITS.index(e))
    n_stratum = size.sum(axis=0)
    # Variables: x[c, p] (3 per class), then per (stratum, split) five slacks:
    # over window, under window, above quota, below quota, empty.
    n_x = 3 * n_c
    n_slack = 5 * 3 * n_s
    obj = np.concatenate([cost.ravel(), np.tile([_WINDOW, _WINDOW, _QUOTA, _QUOTA, _EMPTY],
                                                3 * n_s)])
    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0
    for c in range(n_c):                                       # one split per class
        rows += [r] * 3
        cols += [3 * c, 3 * c + 1, 3 * c + 2]
        vals += [1.0] * 3
        lo.append(1.0)
        hi.append(1.0)
        r += 1
    for s in range(n_s):
        n = int(n_stratum[s])
        q_val, q_test = quotas(n, fractions)
        q = (n - q_val - q_test, q_val, q_test)
        for p in range(3):
            w_lo, w_hi = window(n, fractions[p], q[p])
            base = n_x + 5 * (3 * s + p)
            members = np.flatnonzero(size[:, s])
            least = int(p > 0 and n >= 3 and fractions[p] > 0)
            for lhs_extra, bound in (((base, -1.0), ("le", w_hi)),
                                     ((base + 1, 1.0), ("ge", w_lo)),
                                     ((base + 2, -1.0), ("le", q[p])),
                                     ((base + 3, 1.0), ("ge", q[p])),
                                     ((base + 4, 1.0), ("ge", least))):
                rows += [r] * (len(members) + 1)
                cols += [3 * c + p for c in members] + [lhs_extra[0]]
                vals += [size[c, s] for c in members] + [lhs_extra[1]]
                lo.append(-np.inf if bound[0] == "le" else bound[1])
                hi.append(bound[1] if bound[0] == "le" else np.inf)
                r += 1
    a = coo_matrix((vals, (rows, cols)), shape=(r, n_x + n_slack)).tocsr()
    integrality = np.concatenate([np.ones(n_x), np.zeros(n_slack)])
    upper = np.concatenate([np.ones(n_x), np.full(n_slack, np.inf)])
    res = milp(obj, constraints=LinearConstraint(a, lo, hi), integrality=integrality,
               bounds=Bounds(np.zeros(n_x + n_slack), upper),
               options={"mip_rel_gap": 0.0, "time_limit": 300.0})
    if res.x is None:
        raise RuntimeError(f"the split assignment found no solution: {res.message}")
    x = res.x[:n_x].reshape(n_c, 3)
    return [SPLITS[int(np.argmax(row))] for row in x]
