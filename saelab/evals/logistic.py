"""Logistic regression for the probing plugins: many 1-D probes at once, L2 probes (one, or
many small ones at once) and SAEBench's Adam-trained one-vs-rest probes.

`fit_1d` fits `sigmoid(w * z_f + b)` for every feature f and every task t at once: Newton's
method on the 2x2 system of each (task, feature) pair, all pairs in one set of tensor
operations (no Python loop over features), chunked over features to bound memory. Features
are given as sparse columns (an SAE's latents: most values are exactly zero) or dense ones
(the hook's channels). A feature's zero entries are not stored: they all share the logit `b`,
so their contribution to the gradient, Hessian and loss is a closed form in the counts of
zero entries and of positives among them. The cost per Newton step is then
O(tasks x stored entries), not O(tasks x tokens x features).

`fit_l2` is the probe of SAEBench's sparse probing: scikit-learn's default
`LogisticRegression` objective (L2 on the weights with C = 1, the intercept unpenalised),
minimised with L-BFGS; `fit_l2_batched` the same objective (with sample weights: scikit-learn's
`class_weight="balanced"`) for many problems of a few features at once, by Newton's method
(absorption's k-sparse probes). `train_probes` is SAEBench's `train_multi_probe` (absorption's
ground-truth probes and its L1 probe on latents), on dense rows or an SAE's sparse `Rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

# Elements per chunk (tasks x stored entries) in `fit_1d`: 1 MB of float32 per temporary,
# which stays in cache; larger chunks were slower on CPU.
CHUNK_ELEMENTS = 1 << 18


@dataclass
class Columns:
    """`n_features` columns over `n_rows` rows (tokens), as the stored entries of each column:
    `rows`, `cols` and `values` [E], sorted by column. Entries not stored are zero."""

    rows: Tensor
    cols: Tensor
    values: Tensor
    n_rows: int
    n_features: int

    @classmethod
    def sparse(cls, rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, n_features: int):
        order = torch.argsort(cols, stable=True)
        return cls(rows[order], cols[order], values[order], n_rows, n_features)

    @classmethod
    def dense(cls, x: Tensor) -> Columns:
        """Every value of `x` [N, F] stored (zeros included: harmless)."""
        n, f = x.shape
        rows = torch.arange(n, device=x.device).repeat(f)
        cols = torch.arange(f, device=x.device).repeat_interleave(n)
        return cls(rows, cols, x.T.reshape(-1), n, f)

    def bounds(self, per_chunk: int) -> list[tuple[int, int, int, int]]:
        """(first feature, last feature + 1, first entry, last entry + 1) of chunks of whole
        columns holding about `per_chunk` entries each (a column larger than that goes alone)."""
        counts = torch.bincount(self.cols, minlength=self.n_features).cpu()
        ends = counts.cumsum(0).tolist()
        chunks, start_f, start_e = [], 0, 0
        for f in range(self.n_features):
            if ends[f] - start_e >= per_chunk or f == self.n_features - 1:
                chunks.append((start_f, f + 1, start_e, ends[f]))
                start_f, start_e = f + 1, ends[f]
        return chunks


@dataclass
class Fit1D:
    """Per task and feature [T, F]: weight and bias on the standardised feature `z / scale`,
    and the mean binary cross-entropy (nats) on the rows it was fitted on."""

    w: Tensor
    b: Tensor
    scale: Tensor  # [F]: root mean square of each feature over the fitted rows (1 if zero)
    loss: Tensor


def fit_1d(
    x: Columns,
    labels: Tensor,
    balanced: bool = False,
    ridge: float = 1e-4,
    max_iter: int = 25,
    tol: float = 1e-6,
    chunk_elements: int = CHUNK_ELEMENTS,
    dtype: torch.dtype = torch.float32,
) -> Fit1D:
    """1-D logistic probes of every feature for every task: minimises, per (task, feature),
    `sum_n a_n BCE(sigmoid(w * z_n / s + b), y_n) + ridge / 2 * w^2`, with `s` the feature's
    root mean square (so the ridge, which keeps a feature that separates the task perfectly at
    a finite weight, means the same for every feature) and row weights `a` summing to 1: equal
    (the mean), or with `balanced` each class weighing 1/2 (`class_weights`). `labels` [T, N].

    Newton steps from w = 0, b = the log-odds of the (weighted) base rate. Each step's one pass
    over the entries gives the objective at the current point with its gradient and Hessian;
    a pair whose objective went up goes back to its last point with half the step (the others
    go on). Stops when no pair's objective fell by more than `tol` in the last step (the
    objective, not the weights: a pair that a feature nearly separates has a flat objective
    along w, whose float32 Newton steps stay noisy long after its loss has settled)."""
    y = labels.to(dtype)
    n = y.shape[1]
    sq = torch.zeros(x.n_features, dtype=torch.float64, device=y.device)
    sq.index_add_(0, x.cols, x.values.double().pow(2))
    scale = (sq / n).sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(dtype)
    w = y.new_zeros(len(y), x.n_features)
    b, loss = torch.zeros_like(w), torch.zeros_like(w)
    weights = class_weights(y, balanced)
    for f0, f1, chunk in _chunks(x, y, weights, scale, chunk_elements):
        w[:, f0:f1], b[:, f0:f1], loss[:, f0:f1] = chunk.newton(ridge, max_iter, tol)
    return Fit1D(w, b, scale, loss)


def bce_1d(
    x: Columns, labels: Tensor, fit: Fit1D, balanced: bool = False,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Tensor:  # fmt: skip
    """Binary cross-entropy [T, F] of the fitted probes on other rows (held out), averaged
    with the weights of `fit_1d`."""
    y = labels.to(fit.w.dtype)
    loss = torch.zeros_like(fit.w)
    weights = class_weights(y, balanced)
    for f0, f1, chunk in _chunks(x, y, weights, fit.scale, chunk_elements):
        loss[:, f0:f1] = chunk.total_loss(fit.w[:, f0:f1], fit.b[:, f0:f1])
    return loss


def class_weights(y: Tensor, balanced: bool) -> Tensor:
    """Row weights [T, N] summing to 1 per task: 1/N, or 1/(2 * positives) on positive rows
    and 1/(2 * negatives) on negative ones (a constant probe then scores log 2)."""
    n = y.shape[1]
    if not balanced:
        return torch.full_like(y, 1 / n)
    positives = y.sum(1, keepdim=True).clamp_min(1)
    negatives = (n - y.sum(1, keepdim=True)).clamp_min(1)
    return torch.where(y > 0, 0.5 / positives, 0.5 / negatives)


def _chunks(x: Columns, y: Tensor, weights: Tensor, scale: Tensor, chunk_elements: int):
    """(first feature, end feature, `_Chunk`) over chunks of whole columns."""
    per_chunk = max(1, chunk_elements // max(len(y), 1))
    for f0, f1, e0, e1 in x.bounds(per_chunk):
        values = x.values[e0:e1].to(y.dtype) / scale[x.cols[e0:e1]]
        chunk = _Chunk(x.rows[e0:e1], x.cols[e0:e1] - f0, values, f1 - f0, y, weights)
        yield f0, f1, chunk


class _Chunk:
    """The stored entries of a few features, with each entry's weight `a` and weighted label
    `ay`, and per feature the summed weights of the zero entries (all positive and positive).

    Where every feature stores every row in row order (dense columns), entries are held as a
    [features, rows] matrix and summed along it; otherwise gathered and summed by
    `index_add_`."""

    def __init__(
        self, rows: Tensor, cols: Tensor, values: Tensor, n_features: int, y: Tensor,
        weights: Tensor,
    ) -> None:  # fmt: skip
        n = y.shape[1]
        self.n_features = n_features
        self.dense = len(values) == n_features * n and bool(
            (rows.view(n_features, n) == torch.arange(n, device=rows.device)).all()
        )
        ay = weights * y
        if self.dense:
            self.values, self.a, self.ay = values.view(n_features, n), weights[:, None], ay[:, None]
        else:  # [E] values, [T, E] weights
            self.cols, self.values, self.a, self.ay = cols, values, weights[:, rows], ay[:, rows]
        stored_a, stored_ay = self.sum(self.a), self.sum(self.ay)
        self.zero_a = weights.sum(1, keepdim=True) - stored_a  # [T, F]
        self.zero_ay = ay.sum(1, keepdim=True) - stored_ay

    def sum(self, per_entry: Tensor) -> Tensor:
        """Per-feature sums [T, F] of per-entry values (broadcast over the entries)."""
        if self.dense:
            return per_entry.expand(-1, self.n_features, self.values.shape[1]).sum(-1)
        per_entry = per_entry.expand(-1, len(self.values))
        out = per_entry.new_zeros(per_entry.shape[0], self.n_features)
        return out.index_add_(1, self.cols, per_entry)

    def logits(self, w: Tensor, b: Tensor) -> Tensor:
        if self.dense:
            return torch.addcmul(b[..., None], w[..., None], self.values)
        return torch.addcmul(b[:, self.cols], w[:, self.cols], self.values)

    def total_loss(self, w: Tensor, b: Tensor) -> Tensor:
        """Weighted BCE [T, F]: stored entries, then every zero entry at once (logit b)."""
        z = self.logits(w, b)
        stored = self.sum(self.a * F.softplus(z) - self.ay * z)
        return stored + self.zero_a * F.softplus(b) - self.zero_ay * b

    def newton(self, ridge: float, max_iter: int, tol: float) -> tuple[Tensor, Tensor, Tensor]:
        """(w, b, loss) minimising `total_loss + ridge / 2 * w^2` per (task, feature)."""
        rate = (self.zero_ay + self.sum(self.ay)) / (self.zero_a + self.sum(self.a))
        rate = rate.clamp(1e-6, 1 - 1e-6)
        w, b = torch.zeros_like(rate), torch.log(rate / (1 - rate))
        best = None  # (objective, w, b, Newton steps) at each pair's last accepted point
        step = torch.ones_like(w)
        for _ in range(max_iter):
            z = self.logits(w, b)
            p = torch.sigmoid(z)
            r, s = self.a * p - self.ay, self.a * p * (1 - p)
            p0 = torch.sigmoid(b)
            loss = self.sum(self.a * F.softplus(z) - self.ay * z)
            loss += self.zero_a * F.softplus(b) - self.zero_ay * b
            objective = loss + 0.5 * ridge * w.pow(2)
            g_w = self.sum(r * self.values) + ridge * w
            g_b = self.sum(r) + self.zero_a * p0 - self.zero_ay
            sv = s * self.values
            h_ww = self.sum(sv * self.values) + ridge
            h_wb = self.sum(sv)
            h_bb = self.sum(s) + self.zero_a * p0 * (1 - p0)
            det = (h_ww * h_bb - h_wb.pow(2)).clamp_min(torch.finfo(w.dtype).tiny)
            d_w = (h_bb * g_w - h_wb * g_b) / det
            d_b = (h_ww * g_b - h_wb * g_w) / det
            if best is not None:  # went up: back to the last point, half its step
                worse = objective > best[0]
                objective = torch.where(worse, best[0], objective)
                w, b = torch.where(worse, best[1], w), torch.where(worse, best[2], b)
                d_w, d_b = torch.where(worse, best[3], d_w), torch.where(worse, best[4], d_b)
                step = torch.where(worse, step / 2, torch.ones_like(step))
                loss = torch.where(worse, objective - 0.5 * ridge * w.pow(2), loss)
                if (best[0] - objective).amax().item() < tol:
                    break
            best = (objective, w, b, d_w, d_b)
            w, b = w - step * d_w, b - step * d_b
        return w, b, loss


def fit_l2(
    x: Tensor, y: Tensor, C: float = 1.0, max_iter: int = 500, tol: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """(w [D], b): minimises `sum_n BCE(x_n . w + b, y_n) + |w|^2 / (2 C)`, scikit-learn's
    `LogisticRegression(C=C)` objective (SAEBench's probes), by L-BFGS in float64. The
    gradient is written out (no autograd: this runs inside Lightning's inference mode)."""
    x, y = x.double(), y.double().to(x.device)
    params = torch.zeros(x.shape[1] + 1, dtype=torch.float64, device=x.device)
    params.grad = torch.zeros_like(params)
    optimizer = torch.optim.LBFGS(
        [params], max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> Tensor:
        w, b = params[:-1], params[-1]
        z = x @ w + b
        residual = torch.sigmoid(z) - y
        params.grad[:-1] = x.T @ residual + w / C
        params.grad[-1] = residual.sum()
        return (F.softplus(z) - y * z).sum() + w.pow(2).sum() / (2 * C)

    optimizer.step(closure)
    return params[:-1].clone(), params[-1].clone()


def fit_l2_batched(
    x: Tensor, y: Tensor, sample_weight: Tensor | None = None, C: float = 1.0,
    max_iter: int = 100, tol: float = 1e-9,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(w [B, D], b [B]): per problem, minimises `sum_n s_n BCE(x_n . w + b, y_n) + |w|^2 /
    (2 C)` over `x` [B, N, D], `y` [B, N], weights `s` [B, N] (1 if None). Newton's method in
    float64 on the (D + 1)-square Hessians of all problems at once; a problem whose objective
    rose takes half its step until it does not. For small D (a k-sparse probe's k)."""
    x = x.double()
    xa = torch.cat([x, x.new_ones(*x.shape[:-1], 1)], -1)
    y = y.double().to(x.device)
    s = torch.ones_like(y) if sample_weight is None else sample_weight.double().to(x.device)
    reg = x.new_full((xa.shape[-1],), 1 / C)
    reg[-1] = 0  # the intercept is unpenalised

    def logits(theta: Tensor) -> Tensor:
        return torch.bmm(xa, theta[:, :, None])[..., 0]

    def objective(theta: Tensor) -> Tensor:
        z = logits(theta)
        return (s * (F.softplus(z) - y * z)).sum(1) + 0.5 * (reg * theta.pow(2)).sum(1)

    theta = x.new_zeros(xa.shape[0], xa.shape[-1])
    value = objective(theta)
    for _ in range(max_iter):
        p = torch.sigmoid(logits(theta))
        grad = torch.bmm(xa.transpose(1, 2), (s * (p - y))[..., None])[..., 0] + reg * theta
        curvature = (s * p * (1 - p))[..., None]
        hessian = torch.bmm(xa.transpose(1, 2), curvature * xa) + torch.diag(reg)
        step = torch.linalg.solve(hessian, grad)
        size = torch.ones_like(value)
        for _ in range(30):  # halve the step of each problem whose objective rose
            new_value = objective(theta - size[:, None] * step)
            rose = new_value > value + 1e-12 * value.abs()  # not rounding at the optimum
            if not rose.any():
                break
            size = torch.where(rose, size / 2, size)
        step = size[:, None] * step
        theta, value = theta - step, torch.minimum(new_value, value)
        if step.abs().max() < tol:
            break
    return theta[:, :-1], theta[:, -1]


@dataclass
class Rows:
    """`n_features` features of each row, as the row's stored (non-zero) entries: `cols` and
    `values` sorted by row, row r's at `crow[r]:crow[r + 1]` (compressed sparse rows: an
    SAE's latents of each input)."""

    crow: Tensor
    cols: Tensor
    values: Tensor
    n_features: int

    @classmethod
    def from_entries(
        cls, rows: Tensor, cols: Tensor, values: Tensor, n_rows: int, n_features: int
    ) -> Rows:
        order = torch.argsort(rows, stable=True)
        counts = torch.bincount(rows, minlength=n_rows)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(crow, cols[order], values[order], n_features)

    @property
    def n_rows(self) -> int:
        return len(self.crow) - 1

    def slice(self, start: int, end: int) -> Rows:
        """Rows `start .. end - 1`."""
        e0, e1 = int(self.crow[start]), int(self.crow[end])
        return Rows(self.crow[start : end + 1] - e0, self.cols[e0:e1], self.values[e0:e1],
                    self.n_features)  # fmt: skip

    def select(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(i, col, value) of every entry of rows `rows` [M], i its index in `rows`."""
        starts = self.crow[rows]
        counts = self.crow[rows + 1] - starts
        which = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
        first = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
        entry = first + torch.arange(len(which), device=rows.device)
        return which, self.cols[entry], self.values[entry]

    def dense_columns(self, columns: Tensor) -> Tensor:
        """[n_rows, *columns.shape]: each row's value of each listed feature."""
        unique, inverse = torch.unique(columns, return_inverse=True)
        lookup = torch.full((self.n_features,), -1, dtype=torch.long, device=self.cols.device)
        lookup[unique] = torch.arange(len(unique), device=self.cols.device)
        row = torch.repeat_interleave(
            torch.arange(self.n_rows, device=self.cols.device), self.crow.diff()
        )
        slot = lookup[self.cols]
        kept = slot >= 0
        dense = self.values.new_zeros(self.n_rows, len(unique))
        dense[row[kept], slot[kept]] = self.values[kept]
        return dense[:, inverse]


def train_probes(
    x: Tensor | Rows,
    y: Tensor,
    epochs: int = 50,
    batch_size: int = 4096,
    lr: float = 0.01,
    end_lr: float = 1e-5,
    weight_decay: float = 1e-6,
    l1: float = 0.0,
    seed: int = 0,
    desc: str = "train probes",
) -> tuple[Tensor, Tensor]:
    """(w [T, D], b [T]): SAEBench's `train_multi_probe`, T one-vs-rest logistic probes on
    rows `x` [N, D] (dense, or sparse `Rows`) and 0/1 labels `y` [N, T], trained together:
    mean over rows and tasks of the BCE with each task's positives weighted by its negatives
    / positives (`pos_weight`), plus `l1 * mean_t |w_t|_1` (the L1 probe of k-sparse probing);
    Adam with torch's `weight_decay` (on w and b); the learning rate decays exponentially from
    `lr` to `end_lr` over the epochs; minibatches reshuffled each epoch (seeded).

    The probes start at zero (SAEBench's start at torch's random `Linear` init): a feature
    that never fires in `x` keeps weight 0 exactly. Computed in `x`'s dtype. (At the start
    the bias's gradient is 0 but for rounding, which Adam's normalised step turns into a
    step of up to `lr` in float32: runs agree only in float64.) The gradient is written out
    (no autograd: this runs inside Lightning's inference mode)."""
    sparse = isinstance(x, Rows)
    n, d = (x.n_rows, x.n_features) if sparse else x.shape
    values = x.values if sparse else x
    y = y.to(values.device, values.dtype)
    positives = y.sum(0)
    pos_weight = (n - positives) / positives.clamp_min(1)
    w = values.new_zeros(d, y.shape[1])
    b = values.new_zeros(y.shape[1])
    optimizer = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    gamma = (end_lr / lr) ** (1 / epochs)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", leave=False):
        order = torch.randperm(n, generator=generator).to(values.device)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            if sparse:
                which, cols, values = x.select(rows)
                z = b + w.new_zeros(len(rows), w.shape[1]).index_add_(
                    0, which, values[:, None] * w[cols]
                )
            else:
                z = torch.addmm(b, x[rows], w)
            yb = y[rows]
            p = torch.sigmoid(z)
            dz = (pos_weight * yb * (p - 1) + (1 - yb) * p) / yb.numel()
            if sparse:
                w.grad = torch.zeros_like(w).index_add_(0, cols, values[:, None] * dz[which])
            else:
                w.grad = x[rows].T @ dz
            if l1:
                w.grad += l1 / w.shape[1] * torch.sign(w)
            b.grad = dz.sum(0)
            optimizer.step()
        schedule.step()
    return w.T.contiguous(), b
