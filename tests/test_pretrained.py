"""Start from pretrained weights: torchvision ResNet files -> DynamicNet, exactly, or a one-line error."""

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from tv_reference import reference

import ddnn.methods  # noqa: F401  (registers the methods)
from ddnn.errors import DdnnError
from ddnn.models import ModelBuilder, build_model
from ddnn.models.pretrained import apply_init_from, init_from_torchvision, load_state_file
from ddnn.registry import METHODS

TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small nets on a shared 2-core machine: one intra-op thread avoids OpenMP spin-wait slowdowns."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random convs plus random BN affine *and* running stats, so every copied tensor shows in the output."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
    return model.eval()


def _ref_file(tmp_path: Path, name: str, num_classes: int = 10, seed: int = 0) -> tuple[nn.Module, Path]:
    torch.manual_seed(seed)
    ref = _randomise(reference(name, num_classes), seed)
    path = tmp_path / f"{name}-{num_classes}.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def _prefix_ref(name: str, path: Path, num_classes: int = 10) -> nn.Module:
    """The torchvision net `name` made of the first blocks of a deeper file (what a DDNN sub-net is)."""
    small = reference(name, num_classes)
    state = torch.load(path, weights_only=True)
    small.load_state_dict({k: state[k] for k in small.state_dict()})  # strict: every key must exist
    return small.eval()


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert_close(a, b, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- the reference itself


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_reference_matches_torchvision_param_counts(name):
    assert sum(p.numel() for p in reference(name).parameters()) == TORCHVISION_PARAMS[name]


# --------------------------------------------------------------------------- exact equality


@pytest.mark.parametrize("name,sub,bn", [
    ("resnet18", "resnet10", "private"),
    ("resnet34", "resnet18", "private"),
    ("resnet34", "resnet18", "shared"),
    ("resnet50", "resnet26", "shared"),
    ("resnet101", "resnet50", "private"),
])
def test_full_net_and_subnet_equal_torchvision_semantics(tmp_path, name, sub, bn):
    ref, path = _ref_file(tmp_path, name)
    net = build_model(name, num_classes=10, in_channels=3, subnets=[sub], bn=bn)
    assert init_from_torchvision(net, load_state_file(path)) == []
    net.eval()
    x = _x()
    with torch.no_grad():
        want = ref(x)
        _close(net(x), want)
        _close(net.extract().eval()(x), want)
        small = _prefix_ref(sub, path)(x)
        _close(net(x, sub), small)
        _close(net.extract(sub).eval()(x), small)
    assert not torch.allclose(small, want, atol=1e-3)  # the sub-net check is not the full net again
    assert want.std() > 0.05  # logits are not degenerate, so atol 1e-5 means something


def test_private_norm_gets_a_copy_per_subnet(tmp_path):
    _, path = _ref_file(tmp_path, "resnet18")
    net = build_model("resnet18", num_classes=10, in_channels=3, subnets=["resnet10"], bn="private")
    init_from_torchvision(net, load_state_file(path))
    norms = net.stem[1].norms
    assert set(norms) == {"resnet18", "resnet10"}
    state = torch.load(path, weights_only=True)
    for bn in norms.values():
        _close(bn.running_var, state["bn1.running_var"])
        assert int(bn.num_batches_tracked) == int(state["bn1.num_batches_tracked"])
    assert norms["resnet18"].weight.data_ptr() != norms["resnet10"].weight.data_ptr()


def test_private_classifiers_each_get_the_files_and_compute_torchvisions_net(tmp_path):
    ref, path = _ref_file(tmp_path, "resnet34")
    net = build_model("resnet34", num_classes=10, in_channels=3, subnets=["resnet18"], head="private")
    assert init_from_torchvision(net, load_state_file(path)) == []
    fcs = net.head[2].layers
    assert fcs["resnet34"].weight.data_ptr() != fcs["resnet18"].weight.data_ptr()
    net.eval()
    with torch.no_grad():
        _close(net(_x()), ref(_x()))
        _close(net.extract("resnet18").eval()(_x()), _prefix_ref("resnet18", path)(_x()))


def test_wrapped_and_dataparallel_files_unwrap(tmp_path):
    ref, _ = _ref_file(tmp_path, "resnet18")
    state = ref.state_dict()
    for i, obj in enumerate([{"state_dict": state, "epoch": 3},
                             {"model": {f"module.{k}": v for k, v in state.items()}}]):
        torch.save(obj, tmp_path / f"w{i}.pth")
        loaded = load_state_file(tmp_path / f"w{i}.pth")
        assert list(loaded) == list(state)
        net = build_model("resnet18", num_classes=10, in_channels=3).eval()
        init_from_torchvision(net, loaded)
        with torch.no_grad():
            _close(net(_x()), ref(_x()))


def test_file_without_bn_step_counters_loads(tmp_path):
    """torchvision's oldest weight files predate BatchNorm's num_batches_tracked."""
    ref, _ = _ref_file(tmp_path, "resnet18")
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    net = build_model("resnet18", num_classes=10, in_channels=3).eval()
    assert init_from_torchvision(net, state) == []
    with torch.no_grad():
        _close(net(_x()), ref(_x()))


# --------------------------------------------------------------------------- fine-tuning head


def test_class_count_mismatch_keeps_fresh_head_and_loads_the_rest(tmp_path):
    ref, path = _ref_file(tmp_path, "resnet18", num_classes=1000)
    net = build_model("resnet18", num_classes=10, in_channels=3, subnets=["resnet10"]).eval()
    head = [p.clone() for p in net.head[2].parameters()]
    notes = init_from_torchvision(net, load_state_file(path))
    assert notes == ["classifier not loaded: the file has 1000 classes, the model 10 (fine-tuning); "
                     "it keeps its fresh init"]
    for before, after in zip(head, net.head[2].parameters()):
        assert torch.equal(before, after)
    x = _x()
    with torch.no_grad():
        _close(net(x, features=True).stages[-1], ref.forward_features(x))


# --------------------------------------------------------------------------- errors


def test_cifar_family_is_refused(tmp_path):
    _, path = _ref_file(tmp_path, "resnet18")
    net = build_model("resnet20", num_classes=10, in_channels=3)
    with pytest.raises(DdnnError, match=r"maps torchvision ImageNet ResNets.*cifar_resnet model has no torchvision"):
        init_from_torchvision(net, load_state_file(path))


def test_cifar_stem_is_refused(tmp_path):
    _, path = _ref_file(tmp_path, "resnet18")
    net = build_model("resnet18", num_classes=10, in_channels=3, stem="cifar")
    with pytest.raises(DdnnError, match=r"3x3 'cifar' stem: set model.stem=imagenet"):
        init_from_torchvision(net, load_state_file(path))


def test_wrong_family_names_first_mismatching_key(tmp_path):
    _, path = _ref_file(tmp_path, "resnet50")
    net = build_model("resnet34", num_classes=10, in_channels=3)
    before = net.stem[0].weight.clone()
    with pytest.raises(DdnnError, match=r"'layer1\.0\.conv1\.weight' is \[64, 64, 1, 1\] in the file but "
                                        r"\[64, 64, 3, 3\] in the model"):
        init_from_torchvision(net, load_state_file(path))
    assert torch.equal(net.stem[0].weight, before)  # all or nothing: conv1 matched but was not copied


def test_wrong_in_channels_is_a_shape_error(tmp_path):
    _, path = _ref_file(tmp_path, "resnet18")
    net = build_model("resnet18", num_classes=10, in_channels=1)
    with pytest.raises(DdnnError, match=r"'conv1\.weight' is \[64, 3, 7, 7\] in the file but \[64, 1, 7, 7\]"):
        init_from_torchvision(net, load_state_file(path))


def test_shallower_file_names_a_missing_key(tmp_path):
    _, path = _ref_file(tmp_path, "resnet18")
    net = build_model("resnet34", num_classes=10, in_channels=3)
    with pytest.raises(DdnnError, match=r"missing 'layer1\.2\.conv1\.weight'.*file \[2, 2, 2, 2\], model \[3, 4, 6, 3\]"):
        init_from_torchvision(net, load_state_file(path))


def test_deeper_file_needs_allow_deeper(tmp_path):
    _, path = _ref_file(tmp_path, "resnet34")
    net = build_model("resnet18", num_classes=10, in_channels=3).eval()
    with pytest.raises(DdnnError, match=r"more blocks per stage \[3, 4, 6, 3\] than the model \[2, 2, 2, 2\]"):
        init_from_torchvision(net, load_state_file(path))
    assert init_from_torchvision(net, load_state_file(path), allow_deeper_file=True) == []
    with torch.no_grad():
        _close(net(_x()), _prefix_ref("resnet18", path)(_x()))


def test_unknown_key_is_refused(tmp_path):
    ref, _ = _ref_file(tmp_path, "resnet18")
    state = {**ref.state_dict(), "fc2.weight": torch.zeros(3)}
    with pytest.raises(DdnnError, match=r"has 'fc2\.weight', which the model lacks"):
        init_from_torchvision(build_model("resnet18", num_classes=10, in_channels=3), state)


def test_missing_file(tmp_path):
    with pytest.raises(DdnnError, match=r"nope\.pth does not exist; give the path of a torchvision ResNet"):
        load_state_file(tmp_path / "nope.pth")


def test_corrupt_and_truncated_files(tmp_path):
    (tmp_path / "noise.pth").write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                                         .to(torch.uint8).numpy().tobytes())
    with pytest.raises(DdnnError, match=r"noise\.pth is corrupt or truncated"):
        load_state_file(tmp_path / "noise.pth")
    _, path = _ref_file(tmp_path, "resnet18")
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(DdnnError, match=r"cut\.pth is corrupt or truncated"):
        load_state_file(tmp_path / "cut.pth")


class _Payload:
    """Unpickling this runs open(marker, 'w'): the kind of code a weights file must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(DdnnError, match=r"evil\.pth was refused: loading it would call .*, more than plain data"):
        load_state_file(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert marker.exists()


@pytest.mark.parametrize("obj,what", [
    ({"epoch": 3, "lr": 0.1}, r"entry 'epoch' is a int"),
    (torch.zeros(3), r"it holds Tensor"),
    ({}, r"it holds an empty mapping"),
    ([torch.zeros(1)], r"it holds list"),
])
def test_not_a_state_dict(tmp_path, obj, what):
    torch.save(obj, tmp_path / "other.pth")
    with pytest.raises(DdnnError, match=r"other\.pth is not a state dict \(a mapping of names to tensors\): " + what):
        load_state_file(tmp_path / "other.pth")


def test_non_resnet_state_dict_is_named(tmp_path):
    with pytest.raises(DdnnError, match=r"no 'conv1\.weight' \(first keys: weight, bias\); it is not a torchvision"):
        init_from_torchvision(build_model("resnet18", num_classes=10, in_channels=3),
                              nn.Linear(2, 2).state_dict())


# --------------------------------------------------------------------------- apply_init_from


def test_apply_init_from_individual_loads_prefix_into_shallower_net(tmp_path):
    ref, path = _ref_file(tmp_path, "resnet34")
    builder = ModelBuilder("resnet34", ["resnet18"], num_classes=10, in_channels=3, bn="private")
    method = METHODS.get("individual")(None, builder).eval()
    lines: list[str] = []
    digest = apply_init_from(method, path, log=lines.append)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert lines == [f"init_from: {path} (sha256 {digest[:12]}) loaded into 2 net(s)"]
    x = _x()
    with torch.no_grad():
        _close(method.predict(x, "resnet34"), ref(x))
        _close(method.predict(x, "resnet18"), _prefix_ref("resnet18", path)(x))


def test_apply_init_from_logs_each_note_once_and_checks_the_deepest(tmp_path):
    _, path = _ref_file(tmp_path, "resnet18", num_classes=1000)
    nets = nn.ModuleDict({"a": build_model("resnet18", 10, 3), "b": build_model("resnet10", 10, 3),
                          "c": build_model("resnet10", 10, 3)})
    lines: list[str] = []
    apply_init_from(nets, path, log=lines.append)
    assert lines[0] == ("init_from: classifier not loaded: the file has 1000 classes, the model 10 (fine-tuning); "
                        "it keeps its fresh init")
    assert len(lines) == 2 and "sha256" in lines[1]
    deeper = nn.ModuleDict({"a": build_model("resnet34", 10, 3), "b": build_model("resnet18", 10, 3)})
    with pytest.raises(DdnnError, match=r"missing 'layer1\.2\.conv1\.weight'"):
        apply_init_from(deeper, path, log=lines.append)
    with pytest.raises(DdnnError, match=r"holds none"):
        apply_init_from(nn.Linear(2, 2), path, log=lines.append)


# --------------------------------------------------------------------------- torchvision itself


def test_torchvision_resnet18_equality(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = _randomise(torchvision.models.resnet18(weights=None))
    assert list(tv.state_dict()) == list(reference("resnet18").state_dict())  # the reference's layout is torchvision's
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    net = build_model("resnet18", num_classes=1000, in_channels=3, subnets=["resnet10"]).eval()
    assert init_from_torchvision(net, load_state_file(tmp_path / "tv.pth")) == []
    with torch.no_grad():
        _close(net(_x()), tv(_x()))


def test_training_starts_from_the_file_and_records_its_hash(tiny_config, tmp_path):
    """`model.init_from` through the trainer: the built method holds the file's weights before the
    first step, and results.json records the file's sha256."""
    import json

    from ddnn.checkpoint import sha256_of
    from ddnn.engine.trainer import Trainer

    torch.manual_seed(0)
    ref = reference("resnet18", num_classes=4)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    cfg = tiny_config("model.name=resnet18", "model.subnets=[resnet10]", "model.widths=null", "model.stem=imagenet",
                      "data.synthetic.image_size=32", "data.synthetic.size=40", f"model.init_from={path}",
                      "train.epochs=1", "runtime.precision=fp32")
    lines = []
    trainer = Trainer(cfg, tmp_path / "run", log=lines.append)
    net = trainer.method.model
    assert torch.equal(net.stem[0].weight.detach().contiguous(), ref.conv1.weight)
    heads = net.head[2].layers  # private classifiers (the ekd default): each starts as the file's
    assert set(heads) == {"resnet18", "resnet10"}
    assert all(torch.equal(fc.weight.detach(), ref.fc.weight) for fc in heads.values())
    assert any(line.startswith(f"init_from: {path} (sha256 ") for line in lines)
    results = trainer.fit()
    assert results["init_from"] == {"path": str(path), "sha256": sha256_of(path)}
