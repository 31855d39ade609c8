"""Network factories: paper A's 3D-DenseNet and 3D-ResNet (MONAI), paper B's DFRN (ours).

Every factory takes explicit keyword arguments (MONAI style) so that a bundle's ``model.json``
can rebuild the network from ``architecture`` + ``kwargs`` alone (:func:`build_network`).
ReLUs are ``nn.ReLU`` modules, never in-place, so guided backpropagation can guide each one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.nets import DenseNet, ResNet
from torch import nn

#: Paper A: the first convolution keeps the left-right resolution (stride 1 along x).
PAPER_A_FIRST_STRIDE = (1, 2, 2)
_RELU = ("relu", {"inplace": False})

DENSENET_BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32),
                   264: (6, 12, 64, 48)}
#: depth -> (block type, layers per stage), as MONAI's resnet10 ... resnet200.
RESNET_LAYERS = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]),
                 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]),
                 101: ("bottleneck", [3, 4, 23, 3]), 152: ("bottleneck", [3, 8, 36, 3]),
                 200: ("bottleneck", [3, 24, 36, 3])}


def densenet3d(depth: int = 121, in_channels: int = 1, out_channels: int = 2,
               init_features: int = 64, growth_rate: int = 32,
               first_stride: Sequence[int] = PAPER_A_FIRST_STRIDE, spatial_dims: int = 3,
               block_config: Sequence[int] | None = None) -> DenseNet:
    """MONAI DenseNet-121/169/201/264 with a configurable first-convolution stride.

    MONAI hard-codes stride 2 in ``features.conv0``; the layer is rebuilt with ``first_stride``
    (kernel 7, padding 3, no bias, Kaiming init as MONAI does). ``spatial_dims=2`` gives the 2D
    networks of the slice-wise baselines.
    """
    if block_config is None:
        if depth not in DENSENET_BLOCKS:
            raise ValueError(f"DenseNet depth {depth} unknown; choose from "
                             f"{sorted(DENSENET_BLOCKS)}")
        block_config = DENSENET_BLOCKS[depth]
    net = DenseNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                   init_features=init_features, growth_rate=growth_rate,
                   block_config=tuple(block_config), act=_RELU)
    conv = (nn.Conv3d if spatial_dims == 3 else nn.Conv2d)(
        in_channels, init_features, kernel_size=7, stride=tuple(first_stride)[-spatial_dims:],
        padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    net.features.conv0 = conv
    return net


def resnet3d(depth: int = 200, in_channels: int = 1, out_channels: int = 2,
             width: int = 64, first_stride: Sequence[int] = PAPER_A_FIRST_STRIDE) -> ResNet:
    """MONAI 3D ResNet-10 ... 200 (``width`` channels in the first stage, doubling after)."""
    if depth not in RESNET_LAYERS:
        raise ValueError(f"ResNet depth {depth} unknown; choose from {sorted(RESNET_LAYERS)}")
    block, layers = RESNET_LAYERS[depth]
    net = ResNet(block=block, layers=layers, block_inplanes=[width * 2**i for i in range(4)],
                 spatial_dims=3, n_input_channels=in_channels, conv1_t_size=7,
                 conv1_t_stride=tuple(first_stride), num_classes=out_channels, act=_RELU)
    for module in net.modules():  # MONAI's blocks ignore ``act`` and use in-place ReLUs
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return net


class ResidualBlock(nn.Module):
    """Two 3x3x3 convolutions (BN+ReLU after the first, BN after the second), skip, ReLU.

    When the channel count or resolution changes, the skip is a 1x1x1 convolution (same
    stride) + BN: ResNet's projection shortcut (ours; paper B is silent on it).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.skip: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.skip = nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, stride=stride,
                                                bias=False),
                                      nn.BatchNorm3d(out_channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.skip(x))


#: Stride of each DFRN block's first convolution. Paper B lists stride 1 for every block
#: convolution, but without downsampling the 512-channel block runs at 91 x 55 x 46 and one
#: forward costs 6.7 TFLOP (67 s on 2 cores; 12.8 GB for a batch-2 training step). Halving the
#: resolution when the channels double, as ResNet does, gives the 252 GFLOP measured for the
#: reference DFRN in paper B's summary, so that is our default; (1, 1, 1, 1) is the literal
#: reading.
DFRN_BLOCK_STRIDES = (1, 2, 2, 2)


class DFRN(nn.Module):
    """Paper B's depression-factor regression network: stem, four residual blocks, GAP, FC."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1,
                 channels: Sequence[int] = (64, 128, 256, 512),
                 first_stride: Sequence[int] = PAPER_A_FIRST_STRIDE,
                 block_strides: Sequence[int] = DFRN_BLOCK_STRIDES) -> None:
        super().__init__()
        channels = list(channels)
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, channels[0], 7, stride=tuple(first_stride), padding=3,
                      bias=False),
            nn.BatchNorm3d(channels[0]), nn.ReLU(), nn.MaxPool3d(3, stride=2, padding=1))
        blocks = [ResidualBlock(a, b, stride) for a, b, stride in
                  zip([channels[0]] + channels[:-1], channels, block_strides)]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(channels[-1], out_channels)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def dfrn(in_channels: int = 1, out_channels: int = 1,
         channels: Sequence[int] = (64, 128, 256, 512),
         first_stride: Sequence[int] = PAPER_A_FIRST_STRIDE,
         block_strides: Sequence[int] = DFRN_BLOCK_STRIDES) -> DFRN:
    """Factory of :class:`DFRN` (keyword arguments as stored in a bundle)."""
    return DFRN(in_channels, out_channels, channels, first_stride, block_strides)


#: architecture name -> (factory, fixed keyword arguments)
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    **{f"densenet{d}": (densenet3d, {"depth": d}) for d in DENSENET_BLOCKS},
    **{f"resnet{d}": (resnet3d, {"depth": d}) for d in RESNET_LAYERS},
    "dfrn": (dfrn, {}),
}

#: Name prefix of each family's output layer (the "head" replaced in transfer learning).
HEADS = {"densenet": "class_layers.out", "resnet": "fc", "dfrn": "fc"}


def build_network(architecture: str, **kwargs: Any) -> nn.Module:
    """Build ``architecture`` (e.g. ``densenet121``, ``resnet200``, ``dfrn``) with ``kwargs``."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from "
                         f"{', '.join(ARCHITECTURES)}")
    factory, fixed = ARCHITECTURES[architecture]
    return factory(**fixed, **kwargs)


def head_name(architecture: str) -> str:
    """Module path of the output layer of ``architecture``."""
    return HEADS[architecture.rstrip("0123456789")]


def replace_head(net: nn.Module, architecture: str, out_channels: int) -> nn.Module:
    """Give ``net`` a freshly initialised output layer with ``out_channels`` outputs."""
    parent_name, _, leaf = head_name(architecture).rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    old = getattr(parent, leaf)
    setattr(parent, leaf, nn.Linear(old.in_features, out_channels))
    return net
