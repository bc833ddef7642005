"""Fully connected capsule layer with routing (DigitCaps / ClassCaps)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from capslab.errors import ConfigError
from capslab.ops import safe_norm
from capslab.routing import (
    dynamic_routing,
    dynamic_routing_from_poses,
    scaled_distance_agreement,
    self_attention_routing,
)

ROUTINGS = ("rba", "sda", "self-attention")
#: initial value of the SDA bias (the momentum paper's code)
SDA_BIAS_INIT = 0.1
#: From this batch size on, routing-by-agreement without shared matrices is computed from the
#: poses (:func:`~capslab.routing.dynamic_routing_from_poses`, same maths, fewer bytes moved);
#: below it the prediction vectors are built (faster for tiny batches: docs/benchmarks.md).
FROM_POSES_MIN_BATCH = 8


class ClassCaps(nn.Module):
    """``[B, n_in, d_in] -> [B, n_out, d_out]`` with one ``d_out x d_in`` matrix per (input, output).

    Args:
        num_in: input capsules ``n_in``.
        in_dim: input capsule dimension.
        num_out: output capsules (classes for the last layer).
        out_dim: output capsule dimension.
        routing: ``"rba"`` (routing-by-agreement), ``"sda"`` (scaled-distance-agreement) or
            ``"self-attention"`` (Efficient-CapsNet's, one pass: it has a learned
            ``[n_in, n_out]`` log-prior ``routing_bias``, initialised to zero).
        num_iterations: routing iterations (RBA and SDA).
        share_types: if set, the number of input capsule TYPES; one matrix per (type, output)
            is shared across the ``n_in / share_types`` grid positions of that type (FasTrCaps
            weight sharing). Inputs must be type-major as produced by :class:`PrimaryCaps`.
        init_std: standard deviation of the normal initialisation of the matrices.
        sda_bias: SDA routing only: a learned ``[n_out, d_out]`` bias, initialised to
            :data:`SDA_BIAS_INIT`, added to every ``s_j`` before the squash (the momentum
            paper's code; its text has none).
        device, dtype: where and in which type the parameters are created (``torch.nn``'s
            factory arguments; ``device="meta"`` builds the layer without memory).
    """

    def __init__(
        self,
        num_in: int,
        in_dim: int,
        num_out: int,
        out_dim: int,
        routing: str = "rba",
        num_iterations: int = 3,
        share_types: int | None = None,
        init_std: float = 0.01,
        sda_bias: bool = False,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if routing not in ROUTINGS:
            raise ConfigError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if sda_bias and routing != "sda":
            raise ConfigError(f"sda_bias is a bias of SDA routing; routing is {routing!r}")
        if share_types is not None and num_in % share_types:
            raise ConfigError(f"{num_in} input capsules do not split into {share_types} types")
        self.num_in, self.in_dim, self.num_out, self.out_dim = num_in, in_dim, num_out, out_dim
        self.routing = routing
        self.num_iterations = num_iterations
        self.share_types = share_types
        self.init_std = init_std
        n_mat = share_types if share_types is not None else num_in
        # [n_mat, d_in, n_out * d_out]: one batched matmul per forward, no big temporaries
        self.weight = nn.Parameter(torch.empty(n_mat, in_dim, num_out * out_dim, **factory))
        self.bias = nn.Parameter(torch.empty(num_out, out_dim, **factory)) if sda_bias else None
        self.routing_bias = (nn.Parameter(torch.empty(num_in, num_out, **factory))
                             if routing == "self-attention" else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Matrices from ``N(0, init_std^2)``, the SDA bias at :data:`SDA_BIAS_INIT`, the
        self-attention routing's log-priors at zero."""
        with torch.no_grad():
            # torch.randn on the default device, copied: a seed gives the matrices it gave
            # before this method existed (normal_ in place rounds differently on small tensors),
            # also for a layer built on, or since moved to, another device or dtype
            self.weight.copy_(torch.randn(self.weight.shape) * self.init_std)
            if self.bias is not None:
                self.bias.fill_(SDA_BIAS_INIT)
            if self.routing_bias is not None:
                self.routing_bias.zero_()

    def predictions(self, u: Tensor) -> Tensor:
        """``[B, n_in, d_in] -> u_hat [B, n_in, n_out, d_out]``."""
        b = u.shape[0]
        if self.share_types is None:
            # [n_in, B, d_in] @ [n_in, d_in, n_out*d_out]
            u_hat = torch.bmm(u.transpose(0, 1), self.weight).transpose(0, 1)
        else:
            t = self.share_types
            # group the positions of a type into the matmul's rows: [T, B*P, d_in]
            ut = u.reshape(b, t, -1, self.in_dim).transpose(0, 1).reshape(t, -1, self.in_dim)
            u_hat = torch.bmm(ut, self.weight).reshape(t, b, -1, self.num_out * self.out_dim)
            u_hat = u_hat.transpose(0, 1)
        return u_hat.reshape(b, self.num_in, self.num_out, self.out_dim)

    def forward(self, u: Tensor) -> Tensor:
        if (self.routing == "rba" and self.share_types is None
                and u.shape[0] >= FROM_POSES_MIN_BATCH and not torch.onnx.is_in_onnx_export()):
            return dynamic_routing_from_poses(u, self.weight, self.num_out, self.num_iterations)
        u_hat = self.predictions(u)
        if self.routing == "self-attention":
            return self_attention_routing(u_hat, self.routing_bias)
        if self.routing == "sda":
            return scaled_distance_agreement(u_hat, safe_norm(u, dim=-1), self.num_iterations,
                                             bias=self.bias)
        return dynamic_routing(u_hat, self.num_iterations)

    def extra_repr(self) -> str:
        s = f"{self.num_in}x{self.in_dim} -> {self.num_out}x{self.out_dim}, routing={self.routing}"
        if self.share_types:
            s += f", shared over {self.share_types} types"
        if self.bias is not None:
            s += ", sda_bias"
        return s
