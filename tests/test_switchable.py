"""`ddnn export --switchable` on a tiny trained DDNN: one file per format, every depth equal to the DDNN's."""

import argparse
import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from ddnn import runtime
from ddnn.data import Normalizer
from ddnn.deploy import switchable
from ddnn.deploy.commands import cmd_export
from ddnn.deploy.run import open_run
from ddnn.engine.evaluation import evaluate_checkpoint
from ddnn.engine.setup import InputSpec, build_method
from ddnn.experiments import train
from ddnn.errors import DdnnError
from ddnn.models import ModelBuilder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TorchScript is deprecated in torch 2.13
NAMES = ["resnet14", "resnet8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_config):
    out = tmp_path_factory.mktemp("switchable") / "run"
    train(tiny_config("train.epochs=1"), out, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """Both formats, written by the default `ddnn export --run DIR --switchable`, and what it printed."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cmd_export(args(run_dir)) == 0
    return run_dir / "export", printed.getvalue()


def args(run_dir, **kw):
    base = dict(run=str(run_dir), which="best", subnet=None, all=False, format=None, out=None, verify_images=32,
                switchable=True)
    return argparse.Namespace(**(base | kw))


def references(run_dir):
    """The DDNN's own logits per depth on the test images, and those images as [0, 1] floats."""
    run = open_run(run_dir)
    images = run.load_data().test.images
    x = Normalizer(run.spec.mean, run.spec.std)(images)
    with torch.no_grad():
        return {name: run.method.predict(x, name).numpy() for name in NAMES}, (images.float() / 255).numpy()


def test_onnx_file_runs_every_depth_in_plain_onnxruntime(run_dir, exported):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    folder, _ = exported
    path = folder / "resnet14-switchable.onnx"
    expected, pixels = references(run_dir)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "depth"]
    for index, name in enumerate(NAMES):
        got = session.run(None, {"image": pixels, "depth": np.array(index, dtype=np.int64)})[0]
        np.testing.assert_allclose(got, expected[name], atol=1e-4, rtol=0)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["ddnn"])
    assert [(d["index"], d["name"], d["blocks"]) for d in meta["depths"]] == [(0, "resnet14", [2, 2, 2]),
                                                                              (1, "resnet8", [1, 1, 1])]
    # the shared weights are in the file once: no more numbers than the DDNN holds (weights + BN statistics),
    # fewer than the two depths' own parameters added up
    model = onnx.load(str(path))
    stored = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    ddnn_numbers = sum(t.numel() for t in open_run(run_dir).method.model.state_dict().values() if t.is_floating_point())
    per_depth = sum(d["params"] for d in meta["depths"])
    assert stored <= ddnn_numbers + 8  # + the input mean and std
    assert meta["params_in_file"] < per_depth
    assert [n.op_type for n in model.graph.node].count("If") == 1  # two depths: one test


def test_torchscript_file_runs_every_depth(run_dir, exported):
    folder, _ = exported
    path = folder / "resnet14-switchable.torchscript.pt"
    expected, pixels = references(run_dir)
    extra = {"ddnn.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    with torch.no_grad():
        for index, name in enumerate(NAMES):
            got = module(torch.from_numpy(pixels), index).numpy()  # the TorchScript file takes a plain int
            np.testing.assert_allclose(got, expected[name], atol=1e-5, rtol=0)
    assert [d["name"] for d in json.loads(extra["ddnn.json"])["depths"]] == NAMES
    loaded = runtime.load(path, calibrate=False)  # the runtime reads the same file
    np.testing.assert_allclose(loaded.run(pixels, depth="resnet8").logits, expected["resnet8"], atol=1e-5, rtol=0)


def test_description_records_each_depth(run_dir, exported):
    folder, printed = exported
    results = evaluate_checkpoint(run_dir / "best.pt", "test", log=lambda *_: None)["nets"]
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".torchscript.pt")):
        info = json.loads((folder / f"resnet14-switchable{suffix}.json").read_text())
        assert info["kind"] == "ddnn-switchable" and info["format"] == fmt and info["verified"]["images"] == 32
        assert info["bytes"] == (folder / f"resnet14-switchable{suffix}").stat().st_size
        for d in info["depths"]:
            assert 0 <= d["max_abs_diff"] <= 1e-4
            assert d["top1"] == results[d["name"]]["top1"] and d["val_top1"] is not None
            assert (d["params"], d["macs"]) == (results[d["name"]]["params"], results[d["name"]]["macs"])
        assert f"resnet14-switchable{suffix}: 2 depths in one {fmt} file" in printed
    assert printed.count("depth 1: resnet8 (1-1-1), max abs diff") == 2


def test_failed_verification_of_one_depth_writes_nothing(run_dir, tmp_path, monkeypatch):
    real = switchable.depth_modules

    def off_at_resnet8(net):  # the file's resnet8 gets a classifier bias the DDNN's does not have
        nets = real(net)
        parent, name = [(m, n) for m in nets[1].modules() for n, c in m.named_children() if isinstance(c, nn.Linear)][-1]
        changed = copy.deepcopy(getattr(parent, name))
        changed.bias.data += 0.5
        setattr(parent, name, changed)
        return nets

    monkeypatch.setattr(switchable, "depth_modules", off_at_resnet8)
    out = tmp_path / "s.onnx"
    out.write_bytes(b"an earlier good export")
    with pytest.raises(DdnnError, match=r"failed verification: depth 'resnet8' differs from the DDNN by 5\.00e-01"):
        cmd_export(args(run_dir, format="onnx", out=str(out)))
    assert out.read_bytes() == b"an earlier good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx"]


def test_onnx_export_leaves_a_later_torchscript_file_as_it_would_be(run_dir, exported, tmp_path):
    """torch's ONNX exporter rewrites a script's graphs in place; scripted again in the same process, the
    TorchScript file would carry that code (0.37 MB more for the default run). ddnn exports a copy."""
    folder, _ = exported
    run = open_run(run_dir)
    images = run.load_data().test.images[:8]
    accuracy = {n: {"top1": 0.0, "val_top1": None} for n in NAMES}
    switchable.export_switchable(run, "onnx", tmp_path / "s.onnx", images, accuracy)
    switchable.export_switchable(run, "torchscript", tmp_path / "s.pt", images, accuracy)
    alone = (folder / "resnet14-switchable.torchscript.pt").stat().st_size  # written before any ONNX export
    assert (tmp_path / "s.pt").stat().st_size < 1.25 * alone  # without the copy: 2.0x here


def test_runtime_runs_the_onnx_file_without_torch(run_dir, exported, tmp_path):
    folder, _ = exported
    expected, pixels = references(run_dir)
    np.save(tmp_path / "pixels.npy", pixels[:16])
    np.save(tmp_path / "expected.npy", np.stack([expected[n][:16] for n in NAMES]))
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import ddnn.runtime
        m = ddnn.runtime.load({str(folder / "resnet14-switchable.onnx")!r})
        pixels, expected = np.load({str(tmp_path / "pixels.npy")!r}), np.load({str(tmp_path / "expected.npy")!r})
        for d in m.depths:
            np.testing.assert_allclose(m.run(pixels, depth=d.name).logits, expected[d.index], atol=1e-4, rtol=0)
        out = m.run(pixels, budget_ms=1e6)
        assert 'torch' not in sys.modules, sorted(k for k in sys.modules if k.startswith('torch'))
        print(out.depth.name, len(m.latency))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    depths = json.loads((folder / "resnet14-switchable.onnx.json").read_text())["depths"]
    best = max(depths, key=lambda d: (d["val_top1"], -d["macs"]))["name"]  # a budget every depth fits
    assert done.stdout.split() == [best, "2"]


def test_runtime_falls_back_to_the_json_beside(exported, tmp_path):
    onnx = pytest.importorskip("onnx")
    folder, _ = exported
    model = onnx.load(str(folder / "resnet14-switchable.onnx"))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(runtime.SwitchableError, match="no ddnn metadata and no bare.onnx.json"):
        runtime.load(bare, calibrate=False)
    (tmp_path / "bare.onnx.json").write_text((folder / "resnet14-switchable.onnx.json").read_text())
    assert [d.name for d in runtime.load(bare, calibrate=False).depths] == NAMES


def test_runs_that_cannot_switch_are_refused_in_one_line(run_dir, tiny_config, tmp_path):
    spec = InputSpec(4, (3, 16, 16), (0.5,) * 3, (0.25,) * 3)
    for overrides, message in ((["method=individual"], "'individual' run whose nets .* export them one by one"),
                               (["model.subnets=[]"], r"holds one net \(resnet14\).*--subnet resnet14")):
        cfg = tiny_config(*overrides)
        fake_run = argparse.Namespace(method=build_method(cfg, spec), cfg=cfg, folder=tmp_path)
        with pytest.raises(DdnnError, match=message):
            switchable.switchable_net(fake_run)
    with pytest.raises(DdnnError, match="leave out --subnet and --all"):
        cmd_export(args(run_dir, subnet="resnet8"))


def test_layers_the_depths_share_are_one_module_and_calibrated_shared_bn_stays_per_depth():
    torch.manual_seed(0)
    private = ModelBuilder("resnet14", ["resnet8"], num_classes=4, in_channels=3, widths=(4, 8, 8))().eval()
    full, small = switchable.depth_modules(private)
    assert full[0][0] is small[0][0] is private.stem[0]  # the stem's conv: one module
    assert full[0][1] is not small[0][1]  # each depth's own BN
    shared = ModelBuilder("resnet14", ["resnet8"], num_classes=4, in_channels=3, widths=(4, 8, 8), bn="shared")().eval()
    norm = shared.stem[1]
    norm.set_statistics("resnet8", torch.full((4,), 0.3), torch.full((4,), 2.0))  # as `ddnn calibrate` does
    full, small = switchable.depth_modules(shared)
    assert full[0][0] is small[0][0]
    assert torch.equal(small[0][1].running_var, torch.full((4,), 2.0)) and torch.equal(full[0][1].running_var, torch.ones(4))
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        for net, name in ((full, "resnet14"), (small, "resnet8")):
            torch.testing.assert_close(net(x), shared(x, name))


def test_chain_tests_the_cheapest_depth_first_and_any_other_index_runs_the_costliest():
    nets = [nn.Linear(2, 1) for _ in range(3)]
    for i, net in enumerate(nets):
        nn.init.zeros_(net.weight)
        nn.init.constant_(net.bias, float(i))
    module = switchable.Switchable(nets, macs=[30, 10, 20], mean=[0.0], std=[1.0])
    assert module.depths.index == 1 and module.depths.rest.index == 2  # then the last is depth 0
    scripted, as_tensor = torch.jit.script(module), torch.jit.script(switchable.DepthAsTensor(module))
    x = torch.zeros(1, 2)
    assert [scripted(x, i).item() for i in (0, 1, 2, 7, -1)] == [0.0, 1.0, 2.0, 0.0, 0.0]
    assert [as_tensor(x, torch.tensor(i)).item() for i in (0, 1, 2, 7, -1)] == [0.0, 1.0, 2.0, 0.0, 0.0]
