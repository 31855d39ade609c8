"""Guided backpropagation (Springenberg et al. 2015; paper B's factor attention maps, eq. 3).

At every ReLU the backward signal becomes R_l = (f_l > 0) * (R_{l+1} > 0) * R_{l+1}. Within
:func:`guided_relus` each ``nn.ReLU`` *instance*, whatever its name, runs as a ReLU whose
backward applies both factors in one pass (autograd's ReLU backward, then an in-place clamp).
A module backward hook that clamps autograd's result gives the same numbers, but wraps every
ReLU's input and output in extra autograd nodes and copies; it made a full-size attention map
measurably slower (benchmarks/model_step.py). MONAI's ``GuidedBackpropGrad`` instead replaces
modules whose *name* contains "relu", which silently yields the plain gradient for networks
that call their activations ``act`` (MONAI's ResNet), so it is not used here.

:func:`input_gradient` also computes the input gradient of a single-channel input convolution
(the stem of every network here) itself on CPU: autograd's backward for one input channel ran
at about a tenth of its forward speed (oneDNN), and for a full-size DFRN it took most of the
map's time. Only input gradients are needed, so weight gradients are never computed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

#: Input-convolution gradient: output planes along the first axis handled per slab, so that a
#: slab of the tap planes stays in cache while it is added up.
_SLAB = 4


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward is the guided rule: (out > 0) * (grad > 0) * grad."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0).clamp_(min=0)


@contextmanager
def _patched_forwards(modules: list[nn.Module],
                      forward: Callable[[nn.Module], Callable[..., torch.Tensor]]) -> Iterator[None]:
    """Within the block, ``module.forward`` is ``forward(module)`` for each of ``modules``.

    The replacement is an instance attribute, so hooks and ``torch.fx`` graph modules, which
    call the module, still see it; the class's forward comes back afterwards.
    """
    saved = [vars(module).get("forward") for module in modules]
    for module in modules:
        module.forward = forward(module)
    try:
        yield
    finally:
        for module, old in zip(modules, saved):
            if old is None:
                del module.forward
            else:
                module.forward = old


@contextmanager
def guided_relus(net: nn.Module) -> Iterator[int]:
    """Within the block, backward passes through ``net`` are guided; yields the ReLUs guided.

    Raises ValueError for a network without ``nn.ReLU`` modules or with in-place ones (the
    guided backward needs the ReLU's output).
    """
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"{type(net).__name__} has no nn.ReLU modules: guided backpropagation "
                         "would equal the plain gradient")
    if any(m.inplace for m in relus):
        raise ValueError(f"{type(net).__name__} has in-place ReLUs; build it with "
                         "inplace=False for guided backpropagation")
    with _patched_forwards(relus, lambda _: _GuidedReLU.apply):
        yield len(relus)


def _single_channel_input_gradient(grad: torch.Tensor, conv: nn.Conv3d,
                                   in_shape: tuple[int, ...]) -> torch.Tensor:
    """Gradient w.r.t. the input of ``conv`` (one input channel) from that of its output.

    Each kernel tap's contribution is an output channel of one well-shaped convolution of
    ``grad`` (kernel taps along the first axis stay in that convolution when its stride is 1),
    and the taps' planes are added, strided, into the input grid: the same sums as autograd's
    transposed convolution, in another order (float rounding differs).
    """
    weight = conv.weight.detach()[:, 0]  # (out channels, kx, ky, kz)
    kernel, stride, padding = weight.shape[1:], conv.stride, conv.padding
    if stride[0] == 1:  # the first axis stays a (flipped, transposed) convolution
        taps = weight.flip(1).permute(2, 3, 0, 1).reshape(-1, weight.shape[0], kernel[0], 1, 1)
        planes = F.conv3d(grad, taps, padding=(kernel[0] - 1 - padding[0], 0, 0))
        steps, sizes, pads = (1, *stride[1:]), (1, *kernel[1:]), (0, *padding[1:])
    else:
        taps = weight.permute(1, 2, 3, 0).reshape(-1, weight.shape[0], 1, 1, 1)
        planes = F.conv3d(grad, taps)
        steps, sizes, pads = tuple(stride), tuple(kernel), tuple(padding)
    n, _, *out = planes.shape
    full = [max(s * (o - 1) + k, p + i) for s, o, k, p, i in zip(steps, out, sizes, pads, in_shape)]
    total = planes.new_zeros(n, *full)
    for start in range(0, out[0], _SLAB):
        slab = planes[:, :, start:start + _SLAB].contiguous()
        depth = slab.shape[2]
        for tap, (i, j, k) in enumerate(itertools.product(*map(range, sizes))):
            first = steps[0] * start + i
            total[:, first:first + steps[0] * depth:steps[0],
                  j:j + steps[1] * out[1]:steps[1], k:k + steps[2] * out[2]:steps[2]] += slab[:, tap]
    return total[:, None, pads[0]:pads[0] + in_shape[0], pads[1]:pads[1] + in_shape[1],
                 pads[2]:pads[2] + in_shape[2]]


class _InputConv(torch.autograd.Function):
    """A single-channel Conv3d whose backward gives the input gradient only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:  # noqa: D102
        ctx.conv, ctx.in_shape = conv, tuple(x.shape[2:])
        return conv._conv_forward(x, conv.weight, conv.bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return _single_channel_input_gradient(grad, ctx.conv, ctx.in_shape), None


def _fast_input_conv(module: nn.Module) -> bool:
    """Whether :class:`_InputConv` computes this module's input gradient (a zero-padded,
    undilated, ungrouped single-channel Conv3d whose padding is below its kernel size)."""
    return (isinstance(module, nn.Conv3d) and module.in_channels == 1 and module.groups == 1
            and module.padding_mode == "zeros" and not isinstance(module.padding, str)
            and all(d == 1 for d in module.dilation)
            and all(p < k for p, k in zip(module.padding, module.kernel_size)))


@contextmanager
def input_convs(net: nn.Module, device: torch.device) -> Iterator[int]:
    """Within the block, single-channel input convolutions of ``net`` compute their input
    gradient with :func:`_single_channel_input_gradient` (CPU only: cuDNN's own is fast) and no
    weight gradient; yields how many."""
    convs = [m for m in net.modules() if _fast_input_conv(m)] if device.type == "cpu" else []
    with _patched_forwards(convs, lambda conv: lambda x: _InputConv.apply(x, conv)):
        yield len(convs)


def input_gradient(net: nn.Module, x: torch.Tensor,
                   score: Callable[[torch.Tensor], torch.Tensor],
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   guided: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of ``score(net(transform(x)))`` (summed over the batch) with respect to ``x``.

    Returns ``(output, gradient)``: the network's output (detached) and the guided (default) or
    plain gradient, shaped like ``x``, from one forward and one backward pass. ``transform`` is
    differentiable preprocessing (a zoom to the network's grid), so the map comes back on the
    grid of ``x``. No parameter gradient is computed or stored.
    """
    leaf = x.detach().requires_grad_(True)
    net.eval()
    with ExitStack() as stack:
        stack.enter_context(torch.enable_grad())
        stack.enter_context(guided_relus(net) if guided else nullcontext())
        stack.enter_context(input_convs(net, x.device))
        out = net(transform(leaf) if transform is not None else leaf)
        (grad,) = torch.autograd.grad(score(out).sum(), leaf)
    return out.detach(), grad
