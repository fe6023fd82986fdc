"""The sparse TopK kernels must give the gradients of plain dense autograd, without its cost."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from saelab.sae.kernels import sparse_decode, topk_at

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]
F64 = torch.float64
NAMES = ["x", "pre_bias", "W_enc", "b_enc", "W_dec"]


def topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The TopK encoder as the training recipe runs it: choose on the dense pre-activations."""
    return topk_at(x, W_enc, b_enc, torch.addmm(b_enc, x, W_enc.t()).detach(), k)


def dense_latents(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Reference: topk + relu scattered into dense [N, n] latents (same addmm, so same ties)."""
    pre = torch.addmm(b_enc, x, W_enc.t())
    top = pre.topk(k, dim=-1)
    values = top.values.relu()
    return torch.zeros_like(pre).scatter(-1, top.indices, values), values


def sae_params(N: int, d: int, n: int, dtype: torch.dtype, device: str = "cpu") -> list[Tensor]:
    """x, pre_bias, W_enc, b_enc, W_dec."""
    shapes = [(N, d), (d,), (n, d), (n,), (n, d)]
    return [torch.randn(s, dtype=dtype, device=device) for s in shapes]


def sae_grads(params: list[Tensor], k: int, sparse: bool) -> list[Tensor | None]:
    """Grads of an SAE's MSE loss w.r.t. the params that require grad, and of the kept values."""
    x, pre_bias, W_enc, b_enc, W_dec = params
    if sparse:
        indices, values = topk_encode(x - pre_bias, W_enc, b_enc, k)
        recon = sparse_decode(indices, values, W_dec)
    else:
        latents, values = dense_latents(x - pre_bias, W_enc, b_enc, k)
        recon = latents @ W_dec
    if values.requires_grad:
        values.retain_grad()
    F.mse_loss(recon + pre_bias, x).backward()
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    return [*grads, values.grad]


def assert_same_grads(params: list[Tensor], k: int, rtol: float, atol: float) -> None:
    sparse, dense = sae_grads(params, k, sparse=True), sae_grads(params, k, sparse=False)
    for name, s, r in zip([*NAMES, "values"], sparse, dense, strict=True):
        assert (s is None) == (r is None), name
        if r is not None:
            torch.testing.assert_close(
                s, r, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}"
            )


@pytest.mark.parametrize("k", [1, 3, 7])
def test_encode_gradcheck_including_k1_kn_and_clipped(k: int) -> None:
    torch.manual_seed(k)
    x, W_enc = torch.randn(5, 4, dtype=F64), torch.randn(7, 4, dtype=F64)
    b_enc = torch.randn(7, dtype=F64) - 0.5
    _, values = topk_encode(x, W_enc, b_enc, k)
    if k == 7:
        assert (values == 0).any(), "k = n must include relu-clipped values"
    inputs = [t.requires_grad_() for t in (x, W_enc, b_enc)]
    assert torch.autograd.gradcheck(lambda *a: topk_encode(*a, k)[1], inputs)


def test_decode_gradcheck_with_repeated_indices() -> None:
    torch.manual_seed(0)
    indices = torch.randint(0, 6, (5, 4))
    indices[0] = 2  # one row selecting the same latent every time
    values = torch.randn(5, 4, dtype=F64, requires_grad=True)
    W_dec = torch.randn(6, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, W: sparse_decode(indices, v, W), (values, W_dec))


@pytest.mark.parametrize("device", DEVICES)
def test_sae_grads_match_dense_autograd_float32(device: str) -> None:
    torch.manual_seed(0)
    params = sae_params(96, 48, 640, torch.float32, device)
    params[3] -= 1.0  # bias down so that some kept values are relu-clipped
    params = [p.requires_grad_() for p in params]
    assert_same_grads(params, k=24, rtol=1e-4, atol=1e-6)


def test_ties_follow_torch_topk() -> None:
    torch.manual_seed(0)
    x, pre_bias, W_enc, b_enc, W_dec = sae_params(8, 5, 12, F64)
    W_enc[1::2] = W_enc[0::2]  # latents come in identical pairs: tied everywhere
    b_enc[1::2] = b_enc[0::2]
    b_enc[:6] = 5.0
    x[:3] = pre_bias  # these rows see only the bias: six tied maxima for three places
    pre = torch.addmm(b_enc, x - pre_bias, W_enc.t())
    assert (pre[:3] == 5.0).sum(dim=1).eq(6).all()
    params = [p.requires_grad_() for p in (x, pre_bias, W_enc, b_enc, W_dec)]
    assert_same_grads(params, k=3, rtol=1e-10, atol=1e-12)


def test_all_clipped_gives_zero_encoder_grads() -> None:
    torch.manual_seed(0)
    params = sae_params(6, 4, 10, F64)
    params[3] -= 100.0
    params = [p.requires_grad_() for p in params]
    grads = sae_grads(params, 3, sparse=True)
    for g in (grads[2], grads[3], grads[4]):
        assert torch.count_nonzero(g) == 0
    assert_same_grads(params, k=3, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("trainable", [(0,), (2,), (3,), (4,), (1, 3), (0, 4)])
def test_only_needed_grads(trainable: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    params = sae_params(7, 5, 16, F64)
    params = [p.requires_grad_(i in trainable) for i, p in enumerate(params)]
    assert_same_grads(params, k=4, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_decode_matches_dense_with_repeated_indices(device: str) -> None:
    torch.manual_seed(2)
    indices = torch.randint(0, 30, (9, 5), device=device)
    indices[0] = 2
    values = torch.randn(9, 5, dtype=F64, device=device, requires_grad=True)
    W_dec = torch.randn(30, 4, dtype=F64, device=device, requires_grad=True)
    sparse_decode(indices, values, W_dec).square().sum().backward()
    ref_values, ref_W = (t.detach().clone().requires_grad_() for t in (values, W_dec))
    rows = torch.arange(9, device=device)[:, None]
    dense = torch.zeros(9, 30, dtype=F64, device=device)
    (
        dense.index_put((rows, indices), ref_values, accumulate=True) @ ref_W
    ).square().sum().backward()
    torch.testing.assert_close(values.grad, ref_values.grad)
    torch.testing.assert_close(W_dec.grad, ref_W.grad)


def _dense_tensors(tree: object) -> list[Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, Tensor) and t.layout == torch.strided]


class _LargestNewTensor(TorchDispatchMode):
    """Records the size of the largest dense tensor any op allocates (views don't count)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in _dense_tensors((args, kwargs))}
        for t in _dense_tensors(out):
            if t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.numel())
        return out


def largest_tensor_in_backward(params: list[Tensor], k: int) -> int:
    x, pre_bias, W_enc, b_enc, W_dec = params
    indices, values = topk_encode(x - pre_bias, W_enc, b_enc, k)
    loss = F.mse_loss(sparse_decode(indices, values, W_dec) + pre_bias, x)
    with _LargestNewTensor() as mode:
        loss.backward()
    return mode.largest


def test_backward_builds_no_dense_latent_tensor_nor_unneeded_grads() -> None:
    N, d, n, k = 64, 8, 4096, 4  # N*n is 8x the weights and 1000x the kept activations
    params = sae_params(N, d, n, torch.float32)
    assert largest_tensor_in_backward([p.requires_grad_() for p in params], k) == n * d
    # Only the encoder bias trains: no weight-sized gradient may be computed.
    params = [p.detach().requires_grad_(i == 3) for i, p in enumerate(params)]
    assert largest_tensor_in_backward(params, k) == n


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_close_to_float32(device: str) -> None:
    torch.manual_seed(3)
    params32 = sae_params(32, 16, 128, torch.float32, device)
    params16 = [p.bfloat16().requires_grad_() for p in params32]
    params32 = [p.bfloat16().float().requires_grad_() for p in params32]
    grads16 = sae_grads(params16, 8, sparse=True)[:5]
    grads32 = sae_grads(params32, 8, sparse=False)
    for name, g16, g32 in zip(NAMES, grads16, grads32[:5], strict=True):
        assert g16.dtype == torch.bfloat16, name
        assert F.cosine_similarity(g16.float().flatten(), g32.flatten(), dim=0) > 0.99, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_never_waits_for_the_gpu() -> None:
    """A host sync (e.g. bincount sizing its output) would leave the GPU idle between launches."""
    params = [p.requires_grad_() for p in sae_params(256, 64, 1024, torch.float32, "cuda")]
    x, pre_bias, W_enc, b_enc, W_dec = params
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        indices, values = topk_encode(x - pre_bias, W_enc, b_enc, 8)
        F.mse_loss(sparse_decode(indices, values, W_dec) + pre_bias, x).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
