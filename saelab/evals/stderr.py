"""Standard errors of metrics: the delta method over contexts, and paired differences.

The units are contexts, not tokens: the tokens of one context are correlated, the contexts are
drawn independently of each other. Each metric with a standard error is a smooth function g of
totals T = sum_c s_c of k per-context partial sums s_c (tokens, summed squared errors, CE
summed over the context, ...). Linearising g at T, context c's influence on the metric is

    phi_c = C * grad g(T) . (s_c - mean_c s_c)        (C contexts)

and SE^2 = sum_c phi_c^2 / (C (C - 1)). For a mean over tokens with equally many tokens per
context this is the textbook sd(context means) / sqrt(C); for ratios (nmse averaged over
tokens, fvu, CE loss recovered, KL per prediction) it is the ratio estimator's variance. The
gradient comes from autograd on the plugin's own formula, so the value and its SE cannot
disagree. No resampling: the same sums give the same SE, on any number of ranks.

Two runs evaluated on the same contexts (a sweep; `tokens_sha256` in the provenance) differ by
m_A - m_B with influence phi^A_c - phi^B_c: the paired SE, much smaller than either SE when the
runs err on the same contexts. The influences are saved per run (`contexts.safetensors`) so
that `saelab compare` can pair any two runs later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

Z_95 = 1.959964  # two-sided 95% normal quantile


class Estimate(float):
    """A metric's value (it is the float) with its standard error `se` and each context's
    influence `influence` [C] on it, in the order of `contexts` [C] (context indices in the
    data, -1 where unknown). Anything that reads floats reads it unchanged."""

    se: float
    influence: Tensor
    contexts: Tensor

    def __new__(cls, value: float, se: float, influence: Tensor, contexts: Tensor) -> Estimate:
        estimate = super().__new__(cls, value)
        estimate.se, estimate.influence, estimate.contexts = se, influence, contexts
        return estimate


def standard_error(influence: Tensor) -> float:
    """sqrt(sum phi^2 / (C (C - 1))) of influences [C] (NaN for fewer than 2 contexts); of
    phi^A - phi^B, the paired SE of a difference."""
    n = influence.numel()
    if n < 2:
        return math.nan
    return math.sqrt(float(influence.double().pow(2).sum()) / (n * (n - 1)))


def estimates(
    contexts: Tensor,
    sums: Tensor,
    names: Mapping[str, int],
    formulas: Callable[[dict[str, Tensor]], dict[str, Tensor]],
) -> dict[str, Estimate]:
    """Each metric of `formulas(totals)` with its delta-method SE and influences, from the
    per-context partial sums `sums` [C, k] of the contexts `contexts` [C]: its columns are the
    sums `names` (name -> length: 1 for a scalar, a vector's length).

    `formulas` maps the totals (name -> 0-d float64 tensor) to each metric as a differentiable
    expression; constants it closes over (e.g. per-dimension sums) carry no influence."""
    order = torch.argsort(contexts, stable=True)
    # the states may be inference-mode tensors (Lightning's test loop): copies that autograd
    # may record, made outside inference mode
    with torch.inference_mode(False), torch.enable_grad():
        contexts, sums = contexts[order].clone(), sums[order].double().clone()
        totals = sums.sum(0).requires_grad_()
        parts = zip(names.items(), totals.split(list(names.values())), strict=True)
        values = formulas({name: part if length > 1 else part[0] for (name, length), part in parts})
        centred = sums - sums.mean(0)
        out = {}
        for key, value in values.items():
            (grad,) = torch.autograd.grad(value, totals, retain_graph=True, allow_unused=True)
            grad = torch.zeros_like(totals) if grad is None else grad
            influence = (len(sums) * centred @ grad).detach()
            out[key] = Estimate(value.item(), standard_error(influence), influence, contexts)
    return out


def paired(a: Estimate, b: Estimate) -> tuple[float, float]:
    """(a - b, its paired SE) of two estimates over the same contexts."""
    if not torch.equal(a.contexts, b.contexts):
        raise ValueError("the two estimates are not over the same contexts")
    return float(a) - float(b), standard_error(a.influence - b.influence)
