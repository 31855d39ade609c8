"""Model bundles: safetensors only, sha256 checked, schema enforced, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch

from bids_mdd.errors import BidsMddError
from bids_mdd.models.bundle import FORMAT_VERSION, find_bundles, load_bundle, write_bundle
from bids_mdd.models.inputs import GM_INPUT
from conftest import CreatesFile, relist_weights

pytestmark = pytest.mark.unit  # make test-fast

KWARGS = {"init_features": 4, "growth_rate": 4, "block_config": [1, 1, 1, 1]}


def _meta(name: str = "tiny") -> dict:
    return {"name": name, "architecture": "densenet121", "kwargs": KWARGS,
            "task": "classification", "outputs": ["control", "MDD"],
            "input": GM_INPUT.to_json()}


@pytest.fixture()
def bundle(tmp_path):
    from bids_mdd.models.networks import build_network

    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append(build_network("densenet121", **KWARGS).state_dict())
    return write_bundle(tmp_path / "models" / "tiny", _meta(), states), states


def test_roundtrip_gives_the_same_network(bundle):
    written, states = bundle
    loaded = load_bundle(written.path)
    assert loaded.meta["format_version"] == FORMAT_VERSION
    assert loaded.n_folds == 2 and loaded.outputs == ["control", "MDD"]
    assert loaded.input_spec == GM_INPUT
    nets = loaded.ensemble()
    x = torch.randn(1, 1, 40, 48, 40)
    with torch.no_grad():
        for net, state in zip(nets, states):
            reference = written.network()
            reference.load_state_dict(state)
            assert torch.equal(net(x), reference.eval()(x))
        assert not torch.equal(nets[0](x), nets[1](x))  # two folds, two networks
    assert sorted(p.name for p in written.path.iterdir()) == [
        "fold-1.safetensors", "fold-2.safetensors", "model.json"]
    assert not list(written.path.parent.glob(".*partial*"))


def test_tampered_weights_are_refused(bundle):
    written, _ = bundle
    weights = written.path / "fold-2.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BidsMddError, match=r"fold-2.safetensors: sha256 .* differs") as error:
        load_bundle(written.path)
    assert error.value.exit_code == 65


def test_pickle_weights_are_refused(tmp_path, bundle):
    written, _ = bundle
    meta = json.loads((written.path / "model.json").read_text())
    meta["folds"][0]["file"] = "fold-1.pt"
    torch.save({}, written.path / "fold-1.pt")
    (written.path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BidsMddError, match="fold-1.pt: weights must be .safetensors"):
        load_bundle(written.path)
    bare = tmp_path / "pickled"
    bare.mkdir()
    torch.save({}, bare / "model.pth")
    with pytest.raises(BidsMddError, match=r"pickle weights \(model.pth\)"):
        load_bundle(bare)


def test_schema_errors_name_the_file(bundle, tmp_path):
    written, _ = bundle
    meta_path = written.path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(BidsMddError, match="model.json: format_version 99 is not supported"):
        load_bundle(written.path)
    del meta["architecture"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BidsMddError, match="model.json: lacks architecture"):
        load_bundle(written.path)
    with pytest.raises(BidsMddError, match="not found") as error:
        load_bundle(tmp_path / "nothing")
    assert error.value.exit_code == 66


def test_existing_bundle_needs_overwrite_and_find_bundles(bundle):
    written, states = bundle
    with pytest.raises(BidsMddError, match="a bundle exists there") as error:
        write_bundle(written.path, _meta(), states)
    assert error.value.exit_code == 73
    write_bundle(written.path, _meta(), states[:1], overwrite=True)
    assert load_bundle(written.path).n_folds == 1
    write_bundle(written.path.parent / "other", _meta("other"), states[:1])
    assert [b.name for b in find_bundles(written.path.parent)] == ["other", "tiny"]
    assert [b.name for b in find_bundles(written.path)] == ["tiny"]


def test_pickle_renamed_safetensors_is_refused_unexecuted(tmp_path, bundle):
    written, _ = bundle
    created = tmp_path / "pwned"
    torch.save({"w": CreatesFile(str(created))}, written.path / "fold-1.safetensors")
    relist_weights(written.path)
    loaded = load_bundle(written.path)  # the checksum matches: the format check comes next
    with pytest.raises(BidsMddError, match=r"fold-1.safetensors: not a safetensors file "
                                           r"\(.*\); export the weights") as error:
        loaded.load_fold(0)
    assert error.value.exit_code == 65 and "\n" not in str(error.value)
    assert not created.exists()


def test_weights_of_another_architecture_are_refused(bundle):
    from safetensors.torch import save_file

    from bids_mdd.models.networks import build_network

    written, _ = bundle
    other = build_network("densenet121", init_features=8, growth_rate=4,
                          block_config=[1, 1, 1, 1]).state_dict()
    save_file(other, str(written.path / "fold-2.safetensors"))
    relist_weights(written.path)
    with pytest.raises(BidsMddError, match=r"fold-2.safetensors: weights do not fit "
                                           r"architecture 'densenet121' of model.json \(.*size "
                                           r"mismatch") as error:
        load_bundle(written.path).load_fold(1)
    assert error.value.exit_code == 65 and "\n" not in str(error.value)


def test_oversized_or_malformed_model_json_is_refused_unread(bundle):
    written, _ = bundle
    meta_path = written.path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "padding": "x" * (2 << 20)}))
    with pytest.raises(BidsMddError, match=r"model.json: \d+ bytes, larger than any model.json"):
        load_bundle(written.path)
    meta_path.write_text(json.dumps({**meta, "folds": ["fold-1.safetensors"]}))
    with pytest.raises(BidsMddError, match=r"folds must be a list of \{\"file\", \"sha256\"\}"):
        load_bundle(written.path)
    meta_path.write_text(json.dumps({**meta, "kwargs": {"no_such_argument": 1}}))
    with pytest.raises(BidsMddError, match=r"architecture 'densenet121' with kwargs .* cannot "
                                           r"be built"):
        load_bundle(written.path).network()
