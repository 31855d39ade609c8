"""Guided backpropagation (Springenberg et al. 2015; paper B's factor attention maps, eq. 3).

At every ReLU the backward signal becomes R_l = (f_l > 0) * (R_{l+1} > 0) * R_{l+1}: autograd's
ReLU backward already applies (f_l > 0); a backward hook on each ``nn.ReLU`` module clamps the
result at zero. The hooks go on every ``nn.ReLU`` *instance*, whatever its name. MONAI's
``GuidedBackpropGrad`` instead replaces modules whose *name* contains "relu", which silently
yields the plain gradient for networks that call their activations ``act`` (MONAI's ResNet), so
it is not used here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn


def _clamp_gradient(module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
    return tuple(None if g is None else g.clamp(min=0) for g in grad_input)


@contextmanager
def guided_relus(net: nn.Module) -> Iterator[int]:
    """Within the block, backward passes through ``net`` are guided; yields the ReLUs hooked.

    Raises ValueError for a network without ``nn.ReLU`` modules or with in-place ones (their
    backward hooks cannot see the output autograd needs).
    """
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"{type(net).__name__} has no nn.ReLU modules: guided backpropagation "
                         "would equal the plain gradient")
    if any(m.inplace for m in relus):
        raise ValueError(f"{type(net).__name__} has in-place ReLUs; build it with "
                         "inplace=False for guided backpropagation")
    handles = [m.register_full_backward_hook(_clamp_gradient) for m in relus]
    try:
        yield len(relus)
    finally:
        for handle in handles:
            handle.remove()


def input_gradient(net: nn.Module, x: torch.Tensor,
                   score: Callable[[torch.Tensor], torch.Tensor],
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   guided: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``score(net(transform(x)))`` (summed over the batch) with respect to ``x``.

    Returns ``(output, gradient)``: the network's output (detached) and the guided (default) or
    plain gradient, shaped like ``x``. ``transform`` is differentiable preprocessing (a zoom to
    the network's grid), so the map comes back on the grid of ``x``.
    """
    leaf = x.detach().requires_grad_(True)
    net.eval()
    with torch.enable_grad(), (guided_relus(net) if guided else nullcontext()):
        out = net(transform(leaf) if transform is not None else leaf)
        (grad,) = torch.autograd.grad(score(out).sum(), leaf)
    return out.detach(), grad
