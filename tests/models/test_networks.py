"""Networks on their real grids: exact shapes of paper A's table 2, one full-size forward each."""

from __future__ import annotations

import pytest
import torch

from bids_mdd.models.networks import (
    DENSENET_BLOCKS,
    RESNET_LAYERS,
    build_network,
    densenet3d,
    head_name,
    replace_head,
)

pytestmark = pytest.mark.unit  # make test-fast

GM_GRID = (121, 145, 121)
T1W_GRID = (182, 218, 182)
TINY_DENSENET = {"init_features": 8, "growth_rate": 4}


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def test_densenet121_full_size_matches_paper_a_table_2():
    net = build_network("densenet121").eval()
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(11.24e6, rel=0.01)
    assert net.features.conv0.stride == (1, 2, 2)
    x = torch.zeros(1, 1, *GM_GRID)
    shapes = {}
    f = x
    for name, module in net.features.named_children():
        f = module(f)
        shapes[name] = tuple(f.shape[1:])
    assert shapes["conv0"] == (64, 121, 73, 61)
    assert shapes["pool0"] == (64, 61, 37, 31)
    assert shapes["denseblock1"] == (256, 61, 37, 31)
    assert shapes["transition1"] == (128, 30, 18, 15)
    assert shapes["denseblock2"] == (512, 30, 18, 15)
    assert shapes["transition2"] == (256, 15, 9, 7)
    assert shapes["denseblock3"] == (1024, 15, 9, 7)
    assert shapes["transition3"] == (512, 7, 4, 3)
    assert shapes["denseblock4"] == (1024, 7, 4, 3)
    out = net.class_layers(f)
    assert out.shape == (1, 2)


@pytest.mark.parametrize("depth", sorted(DENSENET_BLOCKS))
def test_densenet_depths_on_the_real_grid(depth):
    net = build_network(f"densenet{depth}", **TINY_DENSENET).eval()
    blocks = [m for n, m in net.features.named_children() if n.startswith("denseblock")]
    assert [len(list(b.children())) for b in blocks] == list(DENSENET_BLOCKS[depth])
    assert net(torch.zeros(1, 1, *GM_GRID)).shape == (1, 2)


@pytest.mark.parametrize("depth", [10, 200])
def test_resnet_on_the_real_grid(depth):
    width = 64 if depth == 10 else 4
    net = build_network(f"resnet{depth}", width=width).eval()
    assert net.conv1.stride == (1, 2, 2)
    stage_blocks = [len(getattr(net, f"layer{i}")) for i in range(1, 5)]
    assert stage_blocks == RESNET_LAYERS[depth][1]
    assert net(torch.zeros(2, 1, *GM_GRID)).shape == (2, 2)


def test_dfrn_full_size_on_the_1mm_grid():
    net = build_network("dfrn").eval()
    stem = net.stem(torch.zeros(1, 1, *T1W_GRID))
    assert stem.shape == (1, 64, 91, 55, 46)  # stride (1,2,2) then max-pool stride 2
    channels = [b.conv2.out_channels for b in net.blocks]
    assert channels == [64, 128, 256, 512]
    assert isinstance(net.blocks[0].skip, torch.nn.Identity)  # 64 -> 64: identity skip
    assert isinstance(net.blocks[1].skip, torch.nn.Sequential)  # projection when widening
    features = stem
    sizes = []
    for block in net.blocks:
        features = block(features)
        sizes.append(tuple(features.shape[1:]))
    assert sizes == [(64, 91, 55, 46), (128, 46, 28, 23), (256, 23, 14, 12), (512, 12, 7, 6)]
    out = net.fc(torch.flatten(net.pool(features), 1))
    assert out.shape == (1, 1)
    relus = [m for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 1 + 2 * 4 and not any(r.inplace for r in relus)


def test_tiny_dfrn_width_and_head_replacement():
    net = build_network("dfrn", channels=[4, 8, 16, 32]).eval()
    assert net(torch.zeros(1, 1, 40, 48, 40)).shape == (1, 1)
    replace_head(net, "dfrn", 3)
    assert net(torch.zeros(1, 1, 40, 48, 40)).shape == (1, 3)
    dense = replace_head(build_network("densenet121", **TINY_DENSENET), "densenet121", 5)
    assert head_name("densenet201") == "class_layers.out"
    assert dense.class_layers.out.out_features == 5


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="densenet121.*dfrn"):
        build_network("vgg19")
    with pytest.raises(ValueError, match="DenseNet depth 100"):
        densenet3d(depth=100)
