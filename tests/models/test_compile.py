"""torch.compile (``capslab train --compile``) keeps the maths: same outputs and gradients."""

import torch

from capslab.losses import capsule_loss
from capslab.models import create_model


def test_compiled_momentum_network_matches_eager_and_its_reversible_backward_works():
    torch.manual_seed(0)
    opts = dict(num_blocks=2, conv_channels=4, primary_types=2, block_capsules=4, block_dim=4)
    model = create_model("mocapsnet", **opts)
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3])

    def grads(forward):
        model.zero_grad()
        out = forward(x, y)
        capsule_loss(out.lengths, y, out.reconstruction, x)[0].backward()
        return out.lengths.detach(), [p.grad.clone() for p in model.parameters()]

    eager_len, eager_grads = grads(model)
    # the reversible stack stays eager inside the compiled graph, so its exact inversion holds
    comp_len, comp_grads = grads(torch.compile(model))
    assert torch.allclose(comp_len, eager_len, rtol=1e-4, atol=1e-6)
    for a, b in zip(comp_grads, eager_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)
