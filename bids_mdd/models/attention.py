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
map's time. Only input gradients are needed, so weight gradients are never computed. And
a ReLU that only a max-pooling reads (the stems) runs after the pooling, its backward on the
pooled grid (:func:`pooled_relus`): the same maps, without two passes over the largest
activation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _triple  # (MaxPool3d's own int-or-triple expansion)


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward is the guided rule: (out > 0) * (grad > 0) * grad."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0).clamp_(min=0)


@contextmanager
def _patched_forwards(modules: list[nn.Module],
                      forward: Callable[[nn.Module], Callable[..., torch.Tensor]],
                      ) -> Iterator[None]:
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


def _phase_taps(kernel: int, stride: int) -> torch.Tensor:
    """Per residue r of the input position (mod ``stride``), the kernel taps that reach it,
    flipped and zero-padded to ``ceil(kernel / stride)``: shape (stride, M), -1 for no tap."""
    taps = -(-kernel // stride)
    table = torch.full((stride, taps), -1, dtype=torch.long)
    for r in range(stride):
        for j in range(taps):
            tap = r + stride * (taps - 1 - j)
            if tap < kernel:
                table[r, j] = tap
    return table


def _single_channel_input_gradient(grad: torch.Tensor, conv: nn.Conv3d,
                                   in_shape: tuple[int, ...]) -> torch.Tensor:
    """Gradient w.r.t. the input of ``conv`` (one input channel) from that of its output.

    A transposed convolution with one output channel, which oneDNN runs at about a tenth of
    its forward speed, rewritten as one well-shaped convolution. Along each strided axis the
    input positions fall into ``stride`` phases, each reached by its own subset of kernel taps
    (polyphase decomposition); along the first axis, when its stride is 1, the kernel taps
    become output channels. So the convolution has (first-axis taps x phases) output channels,
    each a plane that is then shifted along the first axis and interleaved into the input
    grid: the same sums as autograd's transposed convolution, in another order (float rounding
    differs).
    """
    weight = conv.weight.detach()[:, 0]  # (out channels, k0, k1, k2)
    kernel, stride, padding = weight.shape[1:], conv.stride, conv.padding
    if stride[0] == 1:
        first_taps, first_stride = kernel[0], 1
        axes = (1, 2)
    else:  # the first axis is polyphase-decomposed too
        first_taps, first_stride = 1, stride[0]
        axes = (0, 1, 2)
    tables = {a: _phase_taps(kernel[a], stride[a]) for a in axes}
    reach = {a: tables[a].shape[1] for a in axes}  # taps per phase, M
    # conv weight: output channels (first-axis tap or phase, phase 1, phase 2), kernel M per
    # decomposed axis (1 along a first axis kept as taps)
    sizes = [kernel[0] if stride[0] == 1 else stride[0], stride[1], stride[2]]
    taps_shape = [1 if stride[0] == 1 else reach[0], reach[1], reach[2]]
    # per axis (phases or first-axis taps, M) kernel indices
    index = [tables.get(axis, torch.arange(kernel[0])[:, None]) for axis in range(3)]
    padded = torch.cat([weight, weight.new_zeros(weight.shape[0], 1, *kernel[1:])], 1)
    padded = torch.cat([padded, padded.new_zeros(*padded.shape[:2], 1, kernel[2])], 2)
    padded = torch.cat([padded, padded.new_zeros(*padded.shape[:3], 1)], 3)
    # (-1, no tap: the zero plane appended at the end of each kernel axis)
    i0, i1, i2 = (idx.masked_fill(idx < 0, dim - 1) for idx, dim in zip(index, padded.shape[1:]))
    gathered = padded[:, i0[:, None, None, :, None, None], i1[None, :, None, None, :, None],
                      i2[None, None, :, None, None, :]]  # (c, P0, P1, P2, M0, M1, M2)
    phases = gathered.reshape(weight.shape[0], -1, *taps_shape).transpose(0, 1).contiguous()
    pads = [0 if stride[0] == 1 else reach[0] - 1, reach[1] - 1, reach[2] - 1]
    planes = F.conv3d(grad, phases, padding=tuple(pads))  # (n, P0 * P1 * P2, Q0, Q1, Q2)
    n, _, *steps = planes.shape
    planes = planes.view(n, *sizes, *steps)
    full = planes.new_zeros(n, steps[0] + first_taps - 1, first_stride, steps[1], stride[1],
                            steps[2], stride[2])
    for tap in range(first_taps):  # shift along a first axis kept as taps (once otherwise)
        if stride[0] == 1:
            source = planes[:, tap].unsqueeze(1)  # (n, 1, P1, P2, Q0, Q1, Q2)
        else:
            source = planes  # (n, P0, P1, P2, Q0, Q1, Q2)
        full[:, tap:tap + steps[0]] += source.permute(0, 4, 1, 5, 2, 6, 3)
    full = full.view(n, (steps[0] + first_taps - 1) * first_stride, steps[1] * stride[1],
                     steps[2] * stride[2])
    short = [max(0, p + i - f) for p, i, f in zip(padding, in_shape, full.shape[1:])]
    if any(short):
        full = F.pad(full, (0, short[2], 0, short[1], 0, short[0]))
    return full[:, None, padding[0]:padding[0] + in_shape[0],
                padding[1]:padding[1] + in_shape[1], padding[2]:padding[2] + in_shape[2]]


class _InputConv(torch.autograd.Function):
    """A single-channel Conv3d whose backward gives the input gradient only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
        ctx.conv, ctx.in_shape = conv, tuple(x.shape[2:])
        return conv._conv_forward(x, conv.weight, conv.bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
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


class _ReLUMaxPool(torch.autograd.Function):
    """``max_pool3d(relu(x))`` computed as ``relu(max_pool3d(x))``, with the ReLU's backward on
    the pooled grid.

    The values are the same (ReLU is monotonic), and so is every input gradient: each input
    position that receives gradient is the maximum of its windows, whose pooled value is its
    ReLU output, so masking the pooled gradient by (pooled > 0) and then scattering it equals
    scattering it and then masking by (relu(x) > 0); a window whose maximum is not positive
    contributes nothing either way. The guided rule's clamp acts on the scattered sums, as it
    does in the network's own order. What it saves: the ReLU and its backward over the largest
    activation of the network, the stem's output, which is 8 times the size of the pooled one.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, pool: nn.MaxPool3d, guided: bool) -> torch.Tensor:
        pooled, indices = F.max_pool3d(x, pool.kernel_size, pool.stride, pool.padding,
                                       pool.dilation, ceil_mode=pool.ceil_mode,
                                       return_indices=True)
        out = torch.relu(pooled)
        ctx.save_for_backward(x, out, indices)
        ctx.pool, ctx.guided = pool, guided
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, out, indices = ctx.saved_tensors
        pool = ctx.pool
        masked = torch.ops.aten.threshold_backward(grad, out, 0)
        full = torch.ops.aten.max_pool3d_with_indices_backward(
            masked, x, _triple(pool.kernel_size), _triple(pool.stride), _triple(pool.padding),
            _triple(pool.dilation), pool.ceil_mode, indices)
        return (full.clamp_(min=0) if ctx.guided else full), None, None


def _relu_pool_pairs(net: nn.Module) -> list[tuple[nn.ReLU, nn.MaxPool3d]]:
    """Each ``nn.ReLU`` whose output only an ``nn.MaxPool3d`` reads, both called once: in a
    torch.fx graph (a network :func:`bids_mdd.models.inference._for_inference` folded), else as
    neighbours in an ``nn.Sequential``."""
    pairs = []
    if isinstance(net, torch.fx.GraphModule):
        calls: dict[str, int] = {}
        for node in net.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        for node in net.graph.nodes:
            if node.op != "call_module" or len(node.all_input_nodes) != 1:
                continue
            source = node.all_input_nodes[0]
            if source.op != "call_module" or len(source.users) != 1:
                continue
            relu, pool = net.get_submodule(source.target), net.get_submodule(node.target)
            if (isinstance(relu, nn.ReLU) and isinstance(pool, nn.MaxPool3d)
                    and calls[source.target] == 1 and calls[node.target] == 1):
                pairs.append((relu, pool))
        return pairs
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            children = list(module)
            pairs += [(a, b) for a, b in zip(children, children[1:])
                      if isinstance(a, nn.ReLU) and isinstance(b, nn.MaxPool3d)]
    return pairs


@contextmanager
def pooled_relus(net: nn.Module, guided: bool) -> Iterator[int]:
    """Within the block, each ReLU that only a max-pooling reads runs as :class:`_ReLUMaxPool`
    (applying the guided rule when ``guided``); yields how many pairs. Enter it after
    :func:`guided_relus`, whose ReLU forwards it overrides for these pairs."""
    pairs = [(relu, pool) for relu, pool in _relu_pool_pairs(net)
             if not pool.return_indices and not relu.inplace]
    relus, pools = [relu for relu, _ in pairs], [pool for _, pool in pairs]
    with ExitStack() as stack:
        stack.enter_context(_patched_forwards(relus, lambda _: lambda x: x))
        stack.enter_context(_patched_forwards(
            pools, lambda pool: lambda x: _ReLUMaxPool.apply(x, pool, guided)))
        yield len(pairs)


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
        stack.enter_context(pooled_relus(net, guided))
        stack.enter_context(input_convs(net, x.device))
        out = net(transform(leaf) if transform is not None else leaf)
        (grad,) = torch.autograd.grad(score(out).sum(), leaf)
    return out.detach(), grad
