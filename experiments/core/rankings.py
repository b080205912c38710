"""Rankings across metrics: each method's rank per metric, an aggregate rank, and how the metrics agree.

Input: ``table[method][metric] = value`` and ``better[metric] in {"higher", "lower"}``.

* Rank per metric: 1 = best; ties share the mean of the ranks they span (fractional
  ranking); a method without a value for a metric gets no rank there.
* Aggregate rank: the mean of a method's ranks over the metrics it has, with their
  (population) standard deviation as the spread; sorted by mean rank.
* Agreement: the Spearman rank correlation between every two metrics over the methods that
  have both (``None`` with fewer than three such methods or a constant ranking), after
  turning each metric's ranks so that 1 is best (so "lower is better" metrics count the
  same way round).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np


def _fractional_ranks(values: Mapping[str, float], higher_is_better: bool) -> dict[str, float]:
    items = sorted(values.items(), key=lambda kv: -kv[1] if higher_is_better else kv[1])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1][1] == items[i][1]:
            j += 1
        for k in range(i, j + 1):
            ranks[items[k][0]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _valid(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def rankings(table: Mapping[str, Mapping[str, float | None]], better: Mapping[str, str]) -> dict:
    """``{"ranks": {metric: {method: rank}}, "aggregate": [{"method", "mean_rank", "spread", "n"}],
    "metrics": [...], "agreement": {metric: {metric: ρ | None}}}``; see the module docstring."""
    metrics = list(better)
    ranks = {}
    for metric in metrics:
        if better[metric] not in ("higher", "lower"):
            raise ValueError(f"better[{metric!r}] must be 'higher' or 'lower', not {better[metric]!r}")
        values = {m: float(row[metric]) for m, row in table.items() if _valid(row.get(metric))}
        ranks[metric] = _fractional_ranks(values, better[metric] == "higher")
    aggregate = []
    for method in table:
        mine = [ranks[metric][method] for metric in metrics if method in ranks[metric]]
        aggregate.append({"method": method, "n": len(mine),
                          "mean_rank": float(np.mean(mine)) if mine else None,
                          "spread": float(np.std(mine)) if mine else None})
    aggregate.sort(key=lambda r: (r["mean_rank"] is None, r["mean_rank"] or 0.0))
    agreement: dict[str, dict[str, float | None]] = {}
    for a in metrics:
        agreement[a] = {}
        for b in metrics:
            common = [m for m in table if m in ranks[a] and m in ranks[b]]
            rho = None
            if len(common) >= 3:
                # re-ranked among the methods both metrics have, then centred
                ra = _fractional_ranks({m: ranks[a][m] for m in common}, False)
                rb = _fractional_ranks({m: ranks[b][m] for m in common}, False)
                x = np.array([ra[m] for m in common])
                x -= x.mean()
                y = np.array([rb[m] for m in common])
                y -= y.mean()
                denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
                rho = float((x * y).sum() / denom) if denom > 0 else None
            agreement[a][b] = rho
    return {"metrics": metrics, "ranks": ranks, "aggregate": aggregate, "agreement": agreement}
