"""Guided backpropagation: the rule itself, and that it is really applied to our networks."""

from __future__ import annotations

import pytest
import torch
from monai.visualize import GuidedBackpropGrad
from torch import nn

from bids_mdd.models.attention import _single_channel_input_gradient, guided_relus, input_gradient
from bids_mdd.models.networks import build_network

pytestmark = pytest.mark.unit  # make test-fast


def _first_output(out: torch.Tensor) -> torch.Tensor:
    return out[:, 0]


def test_guided_rule_on_a_two_layer_network() -> None:
    """R = W1^T [(h > 0) * (W2^T g > 0) * W2^T g] for x -> W1 -> ReLU -> W2 (paper B, eq. 3)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 1, bias=False))
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    x = torch.randn(1, 6)
    h = x @ w1.T
    back = w2[0]  # gradient arriving at the ReLU's output
    guided = (back * (h[0] > 0) * (back > 0)) @ w1
    plain = (back * (h[0] > 0)) @ w1
    _, grad = input_gradient(net, x, _first_output)
    _, vanilla = input_gradient(net, x, _first_output, guided=False)
    torch.testing.assert_close(grad[0], guided)
    torch.testing.assert_close(vanilla[0], plain)
    assert not torch.allclose(guided, plain)  # the example exercises the extra clamp


def _small(architecture: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_network(architecture, **kwargs).eval()


@pytest.mark.parametrize("architecture,kwargs", [
    ("dfrn", {"channels": [4, 8, 8, 8]}),
    ("densenet121", {"init_features": 4, "growth_rate": 4}),
    ("resnet10", {"width": 4}),
])
def test_guided_map_differs_from_the_plain_gradient(architecture, kwargs) -> None:
    net = _small(architecture, **kwargs)
    x = torch.randn(1, 1, 40, 48, 40)
    out, guided = input_gradient(net, x, _first_output)
    _, plain = input_gradient(net, x, _first_output, guided=False)
    assert guided.shape == x.shape and torch.isfinite(guided).all()
    assert out.shape == (1, net(x).shape[1])
    correlation = torch.corrcoef(torch.stack([guided.flatten(), plain.flatten()]))[0, 1]
    assert (guided - plain).abs().max() > 0.1 * plain.abs().max()
    assert correlation < 0.99
    # the hooks are gone afterwards: a plain backward pass gives the plain gradient again
    _, again = input_gradient(net, x, _first_output, guided=False)
    torch.testing.assert_close(again, plain)


def test_monai_helper_is_silently_plain_on_resnet_but_ours_is_not() -> None:
    """seeds.md's caution: MONAI replaces modules *named* relu; its ResNet names them 'act'."""
    net = _small("resnet10", width=4)
    x = torch.randn(1, 1, 24, 28, 24)
    monai_map = GuidedBackpropGrad(net)(x, index=0)
    _, plain = input_gradient(net, x, _first_output, guided=False)
    _, ours = input_gradient(net, x, _first_output)
    torch.testing.assert_close(torch.as_tensor(monai_map), plain, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(ours, plain)


def test_guided_backprop_refuses_networks_it_cannot_guide() -> None:
    with pytest.raises(ValueError, match="in-place"):
        with guided_relus(nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True))):
            pass
    with pytest.raises(ValueError, match="no nn.ReLU"):
        with guided_relus(nn.Sequential(nn.Linear(2, 2), nn.Tanh())):
            pass


def test_all_relus_of_our_networks_are_hooked() -> None:
    net = _small("dfrn", channels=[4, 8, 8, 8])
    with guided_relus(net) as hooked:
        assert hooked == 9  # stem + two per residual block


@pytest.mark.parametrize("kernel,stride,padding,shape", [
    ((7, 7, 7), (1, 2, 2), (3, 3, 3), (23, 30, 21)),  # the networks' stems, odd sizes
    ((7, 7, 7), (2, 2, 2), (3, 3, 3), (35, 40, 37)),
    ((7, 7, 7), (1, 1, 1), (3, 3, 3), (17, 19, 16)),
    ((3, 5, 4), (1, 3, 2), (1, 2, 0), (13, 17, 11)),  # kernels the strides do not divide
    ((5, 3, 3), (3, 1, 2), (2, 0, 1), (14, 9, 10)),
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), (8, 9, 7)),
])
def test_single_channel_input_gradient_is_the_transposed_convolution(kernel, stride, padding,
                                                                    shape) -> None:
    """The polyphase input gradient equals autograd's, in float64 to rounding."""
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 6, kernel, stride=stride, padding=padding, bias=False).double()
    x = torch.randn(2, 1, *shape, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    grad = torch.randn_like(out)
    (expected,) = torch.autograd.grad(out, x, grad)
    got = _single_channel_input_gradient(grad, conv, shape)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("architecture", ["dfrn", "densenet121", "resnet10"])
def test_the_stem_relu_and_max_pooling_are_found_in_the_folded_networks(architecture) -> None:
    """The stems' ReLU + max-pooling run as one function in attention passes (their maps are
    compared with the textbook ones in test_inference.py)."""
    from bids_mdd.models.attention import _relu_pool_pairs
    from bids_mdd.models.inference import _for_inference

    kwargs = {"dfrn": {"channels": [4, 8, 8, 8]}, "resnet10": {"width": 4},
              "densenet121": {"init_features": 4, "growth_rate": 4}}[architecture]
    net = _for_inference(build_network(architecture, **kwargs).eval(), "cpu")
    assert len(_relu_pool_pairs(net)) == 1
