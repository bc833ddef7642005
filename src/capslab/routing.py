"""Routing algorithms between a layer of input capsules and a layer of output capsules.

Routing-by-agreement (RBA), scaled-distance-agreement (SDA), Efficient-CapsNet's
self-attention routing, and routing over capsule grids. All functions take the prediction
vectors ``u_hat`` of shape ``[B, n_in, n_out, D]``
(``u_hat[b, i, j]`` is input capsule ``i``'s prediction for output capsule ``j``) and return
the output capsules ``v`` of shape ``[B, n_out, D]``. Coupling coefficients are always a softmax
over the OUTPUT capsules ``j`` (dim 2), never over the inputs: that axis is pinned by a test.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from capslab.ops import exp_squash, safe_norm, squash

# Hook of post-training quantization (capslab.quantize): a function applied to every tensor of
# coupling coefficients that the routings below compute, or None. Only capslab.quantize sets it,
# for the duration of one forward pass (see its ``quantized_routing``). A plain module global and
# not a ContextVar, so that torch.compile guards on it instead of breaking the graph; hence it is
# process-wide.
_coupling_transform: Callable[[Tensor], Tensor] | None = None


def set_coupling_transform(fn: Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor] | None:
    """Install ``fn`` (or ``None``) as the coupling hook; returns the previous one to restore."""
    global _coupling_transform
    previous, _coupling_transform = _coupling_transform, fn
    return previous


def _transform_couplings(c: Tensor) -> Tensor:
    return c if _coupling_transform is None else _coupling_transform(c)


def coupling_coefficients(logits: Tensor) -> Tensor:
    """``[B, n_in, n_out] -> [B, n_in, n_out]``: softmax of the routing logits over outputs.

    Taken over the middle axis of the transposed view: PyTorch's CPU softmax over a short last
    axis (10 classes) measured 5-10x slower than over a middle one (0.10 against 0.02 ms at
    batch 1, 1.6 against 0.14 ms at batch 16 on the development machine). The result is that
    view transposed back (strides, not a copy).
    """
    return _transform_couplings(torch.softmax(logits.transpose(1, 2), dim=1).transpose(1, 2))


def route(
    u_hat: Tensor,
    num_iterations: int,
    update: Callable[[Tensor, Tensor, Tensor], Tensor],
    detach_intermediate: bool = True,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The iteration every routing shares: couplings -> weighted sum (+ bias) -> squash -> new
    logits.

    The predictions are laid out output-major, ``[B, n_out, n_in, D]`` (one copy), for the
    iterations: every sum over the inputs is then a batched product over contiguous rows,
    where the input-major layout made ``einsum`` copy the predictions for every product (a
    batch-1 CapsNet training step was 3.2% faster: docs/benchmarks.md).

    Args:
        u_hat: ``[B, n_in, n_out, D]`` prediction vectors.
        num_iterations: r >= 1; the logits are updated after each of the first r-1 iterations.
        update: ``(logits [B, n_out, n_in], u [B, n_out, n_in, D], v [B, n_out, D]) -> new
            logits``, output-major.
        detach_intermediate: the first r-1 iterations see detached predictions (and bias).
        bias: optional ``[n_out, D]`` added to every ``s_j`` before the squash.
    Returns:
        ``v [B, n_out, D]`` and the last couplings ``[B, n_in, n_out]``.
    """
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    by_output = u_hat.transpose(1, 2).contiguous()  # [B, n_out, n_in, D]
    u_detached = by_output.detach() if detach_intermediate else by_output
    bias_detached = bias.detach() if bias is not None and detach_intermediate else bias
    logits = u_hat.new_zeros(by_output.shape[:3])  # [B, n_out, n_in]
    for it in range(num_iterations):
        last = it == num_iterations - 1
        u, b = (by_output, bias) if last else (u_detached, bias_detached)
        c = coupling_coefficients(logits.transpose(1, 2)).transpose(1, 2)  # [B, n_out, n_in]
        s = (c.unsqueeze(2) @ u).squeeze(2)  # [B, n_out, 1, n_in] @ [B, n_out, n_in, D]
        v = squash(s if b is None else s + b)
        if not last:
            logits = update(logits, u, v)
    return v, c.transpose(1, 2)


def _agreement_update(logits: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """RBA: ``b_ij += <u_hat[j|i], v_j>`` (output-major, see :func:`route`)."""
    return logits + (u @ v.unsqueeze(-1)).squeeze(-1)


def dynamic_routing(
    u_hat: Tensor,
    num_iterations: int = 3,
    detach_intermediate: bool = True,
    return_couplings: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Routing-by-agreement (Sabour et al. 2017).

    Args:
        u_hat: ``[B, n_in, n_out, D]`` prediction vectors.
        num_iterations: routing iterations r >= 1.
        detach_intermediate: run the first r-1 iterations on detached predictions so that the
            gradient flows only through the last iteration (the usual, stable formulation).
        return_couplings: also return the final coupling coefficients ``[B, n_in, n_out]``.
    Returns:
        ``v`` of shape ``[B, n_out, D]`` (and the couplings when asked).
    """
    v, c = route(u_hat, num_iterations, _agreement_update, detach_intermediate)
    if return_couplings:
        return v, c
    return v


def dynamic_routing_from_poses(
    u: Tensor,
    weight: Tensor,
    num_out: int,
    num_iterations: int = 3,
    detach_intermediate: bool = True,
) -> Tensor:
    """Routing-by-agreement of a fully connected capsule layer, computed from the input poses and
    the transformation matrices without building the prediction vectors.

    The same maths as :func:`dynamic_routing` of ``u_hat[b, i, j] = u[b, i] @ W[i, :, j]``
    (equal up to float rounding), rearranged so that every sum over the inputs is one matrix
    product with the ``n_in x d_in`` inputs as its inner dimension:
    ``s[b, j] = sum_{i, d} (c[b, i, j] u[b, i, d]) W[i, d, j, :]`` and
    ``<u_hat[b, i, j], v[b, j]> = sum_d u[b, i, d] (W[i, d, j, :] . v[b, j])``; the first
    iteration's couplings are uniform, so its ``s`` is a single ``[B, n_in d_in] @ [n_in d_in,
    n_out D]`` product. This moves half the bytes of the ``[B, n_in, n_out, D]`` prediction
    vectors (``d_in`` = 8 against ``D`` = 16 per input and output) through large matrix
    products instead of many small ones: faster from a few images per batch on (the CapsNet
    training step at batch 128: ``docs/benchmarks.md``), slower at batch 1.

    Args:
        u: ``[B, n_in, d_in]`` input capsules.
        weight: ``[n_in, d_in, n_out * D]`` transformation matrices (``ClassCaps.weight``).
        num_out: output capsules ``n_out``.
        num_iterations: routing iterations r >= 1.
        detach_intermediate: as in :func:`dynamic_routing`.
    Returns:
        ``v`` of shape ``[B, n_out, D]``.
    """
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    b, n_in, d_in = u.shape
    dim = weight.shape[-1] // num_out
    # rows in (d_in, n_in) order: the products and sums with the poses below then run along the
    # 1,152 inputs rather than the 8 pose dimensions; and the matrices copied once (5.9 MB for
    # CapsNet) into [n_out, d_in*n_in, D], which the two products per iteration read faster
    # than the strided view (7% less routing time at batch 128, 18% at 16)
    poses = u.transpose(1, 2).contiguous()  # [B, d_in, n_in]
    by_output = weight.view(n_in, d_in, num_out, dim).permute(2, 1, 0, 3).reshape(num_out, d_in * n_in, dim)
    detached = [t.detach() if detach_intermediate else t for t in (u, weight, poses, by_output)]
    logits = None  # [n_out, B, n_in]: the layout every step below reads contiguously
    for it in range(num_iterations):
        last = it == num_iterations - 1
        u_, weight_, x, w = (u, weight, poses, by_output) if last else detached
        if logits is None:
            # uniform couplings (as the hook transforms them): one product for every output
            c = coupling_coefficients(u.new_zeros(1, 1, num_out)).view(1, num_out, 1)
            s = (u_.reshape(b, n_in * d_in) @ weight_.reshape(n_in * d_in, num_out * dim)).view(b, num_out, dim) * c
        else:
            c = _transform_couplings(torch.softmax(logits, dim=0))  # [n_out, B, n_in]
            weighted = (c.unsqueeze(2) * x.unsqueeze(0)).view(num_out, b, d_in * n_in)
            s = torch.bmm(weighted, w).transpose(0, 1)  # [B, n_out, D]
        v = squash(s)
        if not last:
            projected = torch.bmm(v.transpose(0, 1), w.transpose(1, 2))  # [n_out, B, d_in*n_in]
            agreement = (projected.view(num_out, b, d_in, n_in) * x.unsqueeze(0)).sum(2)
            logits = agreement if logits is None else logits + agreement
    return v


def sda_inverse_temperature(d_o: Tensor, d_p: Tensor, num_outputs: int, p: float = 0.9) -> Tensor:
    """Inverse temperature ``t`` of scaled-distance-agreement routing (Peer et al. 2018).

    Chosen so that an output at distance ``d_p`` gets coupling ``p`` when all others are at
    ``d_o``: ``t = (ln(p (k-1)) - ln(1-p)) / (d_p - d_o)``. With ``d_p < d_o`` it is negative,
    so larger distances give smaller logits. (The momentum paper's code dropped the brackets
    around the numerator, which flips the sign for large distances.)
    """
    k = num_outputs
    if k < 2:
        raise ValueError("scaled-distance-agreement needs at least 2 output capsules")
    numerator = math.log(p * (k - 1)) - math.log(1.0 - p)
    return numerator / (d_p - d_o)


def scaled_distance_agreement(
    u_hat: Tensor,
    u_norm: Tensor,
    num_iterations: int = 3,
    p: float = 0.9,
    detach_intermediate: bool = True,
    bias: Tensor | None = None,
    return_couplings: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled-distance-agreement routing (SDA).

    Args:
        u_hat: ``[B, n_in, n_out, D]`` prediction vectors.
        u_norm: ``[B, n_in]`` lengths of the input capsules; predictions are clipped so that
            ``|u_hat[j|i]| <= |u_i|``.
        num_iterations: routing iterations.
        p: coupling that an agreeing output should receive.
        detach_intermediate: gradient only through the last iteration (as in
            :func:`dynamic_routing`).
        bias: optional ``[n_out, D]`` added to every ``s_j`` before the squash, in every
            iteration (the momentum paper's code learns one, initialised to 0.1; the paper's
            text has none). Detached in the first r-1 iterations like the predictions.
        return_couplings: also return the final couplings ``[B, n_in, n_out]``; they weight
            the CLIPPED predictions (:func:`clip_predictions`): ``v = squash(sum_i c_ij
            clip(u_hat)[j|i] + bias_j)``.
    Returns:
        ``v`` of shape ``[B, n_out, D]`` (and the couplings when asked).
    """
    n_out = u_hat.shape[2]
    # clipped output-major (route's layout: its copy is then a no-op)
    by_output = _clip_by_output(u_hat.transpose(1, 2).contiguous(), u_norm)  # [B, n_out, n_in, D]

    def distance_update(_logits: Tensor, u: Tensor, v: Tensor) -> Tensor:
        d = safe_norm(v.unsqueeze(2) - u, dim=-1)  # [B, n_out, n_in] (output-major: route)
        d_o = d.mean(dim=(1, 2), keepdim=True)
        return sda_inverse_temperature(d_o, d_o / 2, n_out, p) * d

    v, c = route(by_output.transpose(1, 2), num_iterations, distance_update, detach_intermediate, bias)
    return (v, c) if return_couplings else v


def _clip_by_output(by_output: Tensor, u_norm: Tensor) -> Tensor:
    """SDA's clipping on output-major predictions ``[B, n_out, n_in, D]``."""
    limit = u_norm[:, None, :, None]
    return by_output * torch.clamp(limit / safe_norm(by_output, dim=-1, keepdim=True), max=1.0)


def clip_predictions(u_hat: Tensor, u_norm: Tensor) -> Tensor:
    """The predictions SDA routes: ``u_hat[b, i, j]`` shortened to at most ``|u_i|``
    (``u_norm[b, i]``); ``[B, n_in, n_out, D]`` in and out (the same numbers as the copy
    :func:`scaled_distance_agreement` routes)."""
    return _clip_by_output(u_hat.transpose(1, 2).contiguous(), u_norm).transpose(1, 2)


def self_attention_routing(
    u_hat: Tensor, bias: Tensor | None = None, return_couplings: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Efficient-CapsNet's non-iterative self-attention routing (Mazzia et al. 2021).

    For each output ``j`` the predictions attend to each other: ``A_j = U_j U_j^T / sqrt(D)``
    with ``U_j = u_hat[:, :, j]`` (``[n_in, D]``); input ``i``'s logit for ``j`` is the row sum
    ``sum_k A_j[i, k]``, and the couplings are its softmax over the outputs, as in every
    routing here. Then ``s_j = sum_i (c_ij + b_ij) u_hat[j|i]`` and ``v_j`` is
    :func:`~capslab.ops.exp_squash` of it. The row sum is computed as ``<u_hat[j|i], sum_k
    u_hat[j|k]>``: the same number without the ``n_in x n_in`` matrix.

    Args:
        u_hat: ``[B, n_in, n_out, D]`` prediction vectors.
        bias: optional ``[n_in, n_out]`` log-prior ``b_ij`` added to the couplings (learned,
            initialised to zero in Efficient-CapsNet).
        return_couplings: also return the weights of the sum, ``c_ij + b_ij``
            (``[B, n_in, n_out]``; without a bias, the softmax couplings).
    Returns:
        ``v`` of shape ``[B, n_out, D]`` (and the weights when asked).
    """
    d = u_hat.shape[-1]
    by_output = u_hat.transpose(1, 2)  # [B, n_out, n_in, D]
    total = by_output.sum(dim=2, keepdim=True)  # [B, n_out, 1, D]
    logits = (by_output * total).sum(dim=-1) / math.sqrt(d)  # [B, n_out, n_in]
    c = coupling_coefficients(logits.transpose(1, 2))  # [B, n_in, n_out], softmax over outputs
    if bias is not None:
        c = c + bias
    s = torch.einsum("bij,bijd->bjd", c, u_hat)
    v = exp_squash(s)
    return (v, c) if return_couplings else v


# --- routing over capsule grids (convolutional capsules) ---------------------------------------
#
# Votes on a grid are ``[B, n_in, n_out, D, H, W]``: ``votes[b, i, j, :, y, x]`` is input capsule
# TYPE ``i``'s prediction for output type ``j`` at output position ``(y, x)``. Couplings are
# ``[B, n_in, n_out, H, W]``.

COUPLING_MODES_3D = ("types", "types+positions")


def grid_coupling_coefficients(logits: Tensor, mode: str = "types+positions") -> Tensor:
    """``[B, n_in, n_out, H, W] -> [B, n_in, n_out, H, W]``: softmax of grid routing logits.

    ``mode="types+positions"`` (default): one softmax over output types AND positions jointly
    for every input type, so ``c.sum((2, 3, 4)) == 1`` (DeepCaps' ``softmax_3D``, what the
    authors' Keras code computes). ``mode="types"``: softmax over the OUTPUT types (dim 2),
    separately at every position, so ``c.sum(2) == 1`` everywhere (Algorithm 1 read per
    position, i.e. :func:`dynamic_routing` at every position).
    """
    if mode == "types":
        return _transform_couplings(torch.softmax(logits, dim=2))
    if mode == "types+positions":
        b, n_in = logits.shape[:2]
        c = torch.softmax(logits.reshape(b, n_in, -1), dim=2).reshape(logits.shape)
        return _transform_couplings(c)
    raise ValueError(f"coupling mode must be one of {COUPLING_MODES_3D}, got {mode!r}")


def dynamic_routing_3d(
    votes: Tensor,
    num_iterations: int = 3,
    bias: Tensor | None = None,
    mode: str = "types+positions",
    detach_intermediate: bool = True,
    return_couplings: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Routing-by-agreement on a capsule grid (DeepCaps' 3-D routing).

    ``s_j(y, x) = sum_i c_ij(y, x) votes_ij(y, x) + bias_j``, ``v_j = squash(s_j)`` over ``D``,
    ``b_ij(y, x) += <votes_ij(y, x), v_j(y, x)>``. By default (``mode="types+positions"``,
    DeepCaps' ``softmax_3D``) each input type's couplings are normalised over the output types
    and positions jointly, so an input type distributes one unit of coupling over the whole
    output grid. With ``mode="types"`` the softmax runs over output types at each position, and
    every position is routed exactly as :func:`dynamic_routing` routes ``[n_in, n_out, D]``
    predictions.

    Args:
        votes: ``[B, n_in, n_out, D, H, W]`` predictions.
        num_iterations: routing iterations r >= 1.
        bias: optional ``[n_out, D]`` added to every ``s_j`` (DeepCaps' ConvCaps3D has one).
        mode: coupling softmax, see :func:`grid_coupling_coefficients` (default
            ``"types+positions"``: over output types and positions jointly; ``"types"``: over
            output types, per position).
        detach_intermediate: gradient only through the last iteration (as in
            :func:`dynamic_routing`).
        return_couplings: also return the final couplings ``[B, n_in, n_out, H, W]``.
    Returns:
        ``v`` of shape ``[B, n_out, D, H, W]``, squashed over ``D`` (and the couplings).
    """
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    if votes.dim() != 6:
        raise ValueError(f"votes must be [B, n_in, n_out, D, H, W], got shape {tuple(votes.shape)}")
    bias_grid = None if bias is None else bias[:, :, None, None]  # [n_out, D, 1, 1]
    v_detached = votes.detach() if detach_intermediate else votes
    b, n_in, n_out, _, h, w = votes.shape
    logits = votes.new_zeros(b, n_in, n_out, h, w)
    for it in range(num_iterations):
        last = it == num_iterations - 1
        u = votes if last else v_detached
        c = grid_coupling_coefficients(logits, mode)
        s = torch.einsum("bijyx,bijdyx->bjdyx", c, u)
        if bias_grid is not None:
            s = s + (bias_grid if last or not detach_intermediate else bias_grid.detach())
        v = squash(s, dim=2)
        if not last:
            logits = logits + torch.einsum("bijdyx,bjdyx->bijyx", u, v)
    if return_couplings:
        return v, c
    return v
