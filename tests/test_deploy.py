"""The deploy path on tiny trained runs: profile, export, select and calibrate, with their numbers."""

import argparse
import csv
import json
import math

import pytest
import torch

from ddnn.config import load_config
from ddnn.data import Normalizer
from ddnn.models.calibrate import estimate_statistics
from ddnn.deploy.commands import cmd_calibrate, cmd_export, cmd_profile, cmd_select
from ddnn.deploy.memory import TensorMemoryTracker, peak_forward_memory
from ddnn.deploy.profile import ProfileOptions, profile_method
from ddnn.deploy.run import open_run
from ddnn.deploy.select import Budget, select
from ddnn.checkpoint import load_checkpoint
from ddnn.engine.evaluation import evaluate_checkpoint
from ddnn.experiments import train
from ddnn.errors import DdnnError
from ddnn.models.norm import SharedNorm

TINY = [
    "name=tiny", "data.name=synthetic", "data.synthetic.size=160", "data.synthetic.image_size=16",
    "data.synthetic.channels=3", "data.synthetic.classes=4", "data.batch_size=32", "data.eval_batch_size=64",
    "data.val_fraction=0.2", "data.test_fraction=0.2", "model.name=resnet14", "model.subnets=[resnet8]",
    "model.widths=[4,8,8]", "train.epochs=2", "optim.lr=0.05", "schedule.warmup_epochs=0", "runtime.progress=false",
]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "run"
    train(load_config(None, TINY), out, log=quiet)
    return out


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "shared"
    train(load_config(None, [*TINY, "model.bn=shared", "model.subnets=[resnet8,[1,2,1]]", "train.epochs=3"]), out, log=quiet)
    return out


def ns(**kw):
    return argparse.Namespace(**kw)


def profile_args(**kw):
    base = dict(run=None, which="best", config=None, overrides=[], device="cpu", threads=0, precision="fp32",
                batch_sizes="1,4", repeats=3, warmup=1, out=None)
    return ns(**(base | kw))


# -- memory ---------------------------------------------------------------------------------
def test_tracker_counts_live_tensors_by_hand():
    x = torch.zeros(100)  # 400 bytes, resident
    tracker = TensorMemoryTracker()
    tracker.ignore([x])
    with tracker:
        a = x + 1  # +400 -> 400
        b = a * 2  # +400 -> 800 (peak so far)
        v = b.view(10, 10)  # a view: same storage, no new bytes
        del a  # -> 400
        c = torch.ones(50, dtype=torch.float64)  # +400 -> 800 again
        d = torch.ones(25)  # +100 -> 900: the peak
        del b, v, c, d  # -> 0
        e = torch.ones(10)  # +40
    assert tracker.peak == 900
    assert tracker.live == 40
    del e


def test_peak_forward_memory_of_a_linear_chain():
    net = torch.nn.Sequential(torch.nn.Linear(8, 16, bias=False), torch.nn.ReLU(), torch.nn.Linear(16, 4, bias=False))
    x = torch.randn(5, 8)
    weights = (8 * 16 + 16 * 4) * 4
    # linear1 out (5x16) alive with relu out (5x16, not in place), then linear2 out (5x4) with relu out
    peak = peak_forward_memory(net, x)
    assert peak == weights + x.numel() * 4 + 2 * 5 * 16 * 4


# -- profile --------------------------------------------------------------------------------
def test_profile_of_a_run(run_dir, capsys):
    assert cmd_profile(profile_args(run=str(run_dir))) == 0
    printed = capsys.readouterr().out
    profile = json.loads((run_dir / "profile.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    evaluated = evaluate_checkpoint(run_dir / "best.pt", "test", log=quiet)
    assert list(profile["nets"]) == ["resnet14", "resnet8"]
    assert profile["batch_sizes"] == [1, 4] and profile["repeats"] == 3 and profile["precision"] == "fp32"
    for name, row in profile["nets"].items():
        assert row["params"] == results["nets"][name]["params"] and row["macs"] == results["nets"][name]["macs"]
        assert row["top1"] == evaluated["nets"][name]["top1"]  # the profiled checkpoint's own accuracy
        assert row["val_top1"] is not None
        for b in ("1", "4"):
            lat = row["latency_ms"][b]
            s, d = lat["standalone"], lat["ddnn"]
            assert 0 < s["p10"] <= s["median"] <= s["p90"] and s["repeats"] == 3
            assert lat["ratio"] == pytest.approx(d["median"] / s["median"])
        # bigger batch, more activations; at least the weights and the input
        assert row["peak_memory_bytes"]["4"] > row["peak_memory_bytes"]["1"] >= 4 * (row["params"] + 3 * 16 * 16)
    assert profile["nets"]["resnet14"]["macs"] > profile["nets"]["resnet8"]["macs"]
    with open(run_dir / "profile.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["net"] for r in rows] == ["resnet14", "resnet8"]
    assert float(rows[1]["ratio_b4"]) == pytest.approx(profile["nets"]["resnet8"]["latency_ms"]["4"]["ratio"])
    assert "DDNN/alone @1" in printed and "resnet8" in printed


def test_profile_of_a_config_without_training(tmp_path):
    args = profile_args(overrides=TINY, out=str(tmp_path / "p"), batch_sizes="2")
    assert cmd_profile(args) == 0
    profile = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert profile["config"] == "tiny" and list(profile["nets"]) == ["resnet14", "resnet8"]
    assert all(n["top1"] is None for n in profile["nets"].values())
    assert set(profile["nets"]["resnet8"]["latency_ms"]) == {"2"}


def test_profile_rejects_bad_options(run_dir):
    with pytest.raises(DdnnError, match="batch-sizes"):
        cmd_profile(profile_args(run=str(run_dir), batch_sizes="1,x"))
    with pytest.raises(DdnnError, match="either --run"):
        cmd_profile(profile_args(run=str(run_dir), overrides=["train.epochs=1"]))
    run = open_run(run_dir)
    with pytest.raises(DdnnError, match="fp16 is for CUDA"):
        profile_method(run.method, run.spec, ProfileOptions(precision="fp16", repeats=1))


# -- export ---------------------------------------------------------------------------------
def _reference(run_dir, name, n=40):
    """The DDNN's own logits on the first n test images, and those images as [0, 1] floats."""
    run = open_run(run_dir)
    images = run.load_data().test.images[:n]
    x = Normalizer(run.spec.mean, run.spec.std)(images)
    with torch.no_grad():
        return run.method.predict(x, name), images.float() / 255


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load is deprecated in torch 2.13
def test_export_torchscript_matches_the_ddnn(run_dir, tmp_path):
    out = tmp_path / "r8.pt"
    args = ns(run=str(run_dir), which="best", subnet="resnet8", all=False, format="torchscript", out=str(out),
              verify_images=64)
    assert cmd_export(args) == 0
    expected, pixels = _reference(run_dir, "resnet8")
    loaded = torch.jit.load(str(out))
    with torch.no_grad():
        got = loaded(pixels)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    info = json.loads((tmp_path / "r8.pt.json").read_text())
    assert info["net"] == "resnet8" and info["blocks"] == [1, 1, 1] and info["verified"]["max_abs_diff"] <= 1e-4
    assert info["input"]["normalization"] == "included" and info["output"]["logits"] == 4


def test_export_onnx_all_matches_the_ddnn(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    args = ns(run=str(run_dir), which="best", subnet=None, all=True, format="onnx", out=str(tmp_path), verify_images=64)
    assert cmd_export(args) == 0
    for name in ("resnet14", "resnet8"):
        expected, pixels = _reference(run_dir, name)
        session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"image": pixels.numpy()})[0])  # batch 40: dynamic axis
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_failed_verification_writes_nothing_and_keeps_the_old_file(run_dir, tmp_path, monkeypatch):
    import ddnn.deploy.export as export

    out = tmp_path / "net.pt"
    out.write_bytes(b"an earlier good export")
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no file can pass
    args = ns(run=str(run_dir), which="best", subnet="resnet8", all=False, format="torchscript", out=str(out),
              verify_images=8)
    with pytest.raises(DdnnError, match="failed verification"):
        cmd_export(args)
    assert out.read_bytes() == b"an earlier good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]


def test_export_without_onnx_names_the_extra(run_dir, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *a, **kw):
        if name.startswith("onnx"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    args = ns(run=str(run_dir), which="best", subnet="resnet8", all=False, format="onnx", out=str(tmp_path / "x.onnx"),
              verify_images=8)
    with pytest.raises(DdnnError, match=r"pip install 'ddnn\[export\]'"):
        cmd_export(args)
    assert not (tmp_path / "x.onnx").exists()


def test_export_without_a_name_needs_a_default_net(run_dir, tmp_path):
    """A DDNN run has no single net to ship: without --subnet or --all export says so and writes nothing."""
    args = ns(run=str(run_dir), which="best", subnet=None, all=False, format="torchscript", out=str(tmp_path / "x.pt"),
              verify_images=8)
    with pytest.raises(DdnnError, match="give --subnet NAME or --all.*resnet14, resnet8"):
        cmd_export(args)
    assert not (tmp_path / "x.pt").exists()


def test_export_unknown_net(run_dir):
    args = ns(run=str(run_dir), which="best", subnet="resnet9", all=False, format="torchscript", out=None,
              verify_images=8)
    with pytest.raises(DdnnError, match="no net 'resnet9'.*resnet8"):
        cmd_export(args)


# -- select ---------------------------------------------------------------------------------
def _row(top1, val, params, macs, ms):
    lat = {"standalone": {"median": ms}, "ddnn": {"median": ms}, "ratio": 1.0}
    return {"blocks": [1], "params": params, "macs": macs, "top1": top1, "val_top1": val, "latency_ms": {"1": lat}}


PROFILE = {"nets": {
    "big": _row(99.0, 98.0, 400, 4000, 4.0),
    "mid": _row(98.0, 98.5, 200, 2000, 2.0),  # best on val: chosen over 'big' when both fit
    "small": _row(97.0, 96.0, 100, 1000, 1.0),
}}


@pytest.mark.parametrize("budget, expected", [
    (Budget(max_latency_ms=10), "mid"),
    (Budget(max_latency_ms=1.5), "small"),
    (Budget(max_macs=2000), "mid"),
    (Budget(max_params=150), "small"),
    (Budget(max_latency_ms=3, max_params=150), "small"),
])
def test_select_picks_the_most_accurate_within_budget(budget, expected):
    choice = select(PROFILE, budget)
    assert choice["net"] == expected and choice["ranked_by"] == "val_top1"
    for name, row in PROFILE["nets"].items():
        assert (name in choice["rejected"]) == bool(budget.overruns(row))


def test_select_errors():
    with pytest.raises(DdnnError, match="give a budget"):
        select(PROFILE, Budget())
    with pytest.raises(DdnnError, match="smallest, small, has 1.00 ms > 0.5 ms"):
        select(PROFILE, Budget(max_latency_ms=0.5))
    no_acc = {"nets": {k: v | {"top1": None, "val_top1": None} for k, v in PROFILE["nets"].items()}}
    with pytest.raises(DdnnError, match="no accuracies"):
        select(no_acc, Budget(max_macs=1e9))


def test_select_on_a_profiled_run(run_dir, tmp_path, capsys):
    with pytest.raises(DdnnError, match="ddnn profile --run"):
        cmd_select(ns(run=str(tmp_path), max_latency_ms=5.0, max_macs=None, max_params=None, batch=1, json=False))
    cmd_profile(profile_args(run=str(run_dir)))
    profile = json.loads((run_dir / "profile.json").read_text())
    small_macs = profile["nets"]["resnet8"]["macs"]
    capsys.readouterr()
    assert cmd_select(ns(run=str(run_dir), max_latency_ms=None, max_macs=small_macs, max_params=None, batch=1,
                         json=True)) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["net"] == "resnet8"  # --json: stdout is the JSON alone, the explanation on stderr
    assert err.startswith("selected resnet8 (blocks 1-1-1)") and "resnet14: over budget" in err


# -- calibrate ------------------------------------------------------------------------------
def test_statistics_are_the_average_of_batch_statistics(shared_run):
    """The stem BN's calibrated mean/var = the mean over batches of the conv output's batch mean
    and unbiased variance, computed here by hand."""
    run = open_run(shared_run, calibrated=False)
    model = run.method.model
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(8, 3, 16, 16, generator=gen) for _ in range(3)]
    stats = estimate_statistics(run.method, "resnet8", xs)
    with torch.no_grad():
        feats = [model.stem[0](x) for x in xs]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(stats["model.stem.1"]["mean"], mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats["model.stem.1"]["var"], var, atol=1e-5, rtol=1e-4)
    # blocks resnet8 never runs get no statistics; the shared running stats are left as they were
    assert "model.stages.0.1.body.1" not in stats and "model.stages.0.0.body.1" in stats
    fresh = open_run(shared_run, calibrated=False)
    for k, v in fresh.method.state_dict().items():
        torch.testing.assert_close(run.method.state_dict()[k], v)


def test_calibrate_shared_bn_run(shared_run, capsys):
    before_ckpt = load_checkpoint(shared_run / "best.pt")
    assert cmd_calibrate(ns(run=str(shared_run), which="best", batches=4, batch_size=16, split="test", seed=0)) == 0
    printed = capsys.readouterr().out
    ckpt = load_checkpoint(shared_run / "best.pt")
    cal = ckpt["calibration"]
    assert set(cal["nets"]) == {"resnet14", "resnet8", "d1-2-1"} and cal["images"] == 64 and cal["batches"] == 4
    # the trained state is untouched; the statistics are stored beside it
    for k, v in before_ckpt["state"].items():
        torch.testing.assert_close(ckpt["state"][k], v)
    assert "before" in printed and "resnet8" in printed

    run = open_run(shared_run)  # installs the stored statistics
    norm = run.method.model.stem[1]
    assert isinstance(norm, SharedNorm) and norm.calibrated == {"resnet14", "resnet8", "d1-2-1"}
    m14, m8 = (norm.get_buffer(f"calibrated_mean_{k}") for k in ("resnet14", "resnet8"))
    assert torch.equal(m14, cal["nets"]["resnet14"]["model.stem.1"]["mean"])
    # deeper positions see different features in different sub-nets, so their statistics differ
    pos = "model.stages.1.0.body.1"
    assert not torch.allclose(cal["nets"]["resnet14"][pos]["mean"], cal["nets"]["resnet8"][pos]["mean"])
    # the accuracy after calibration is what `eval` now reports
    lines = []
    evaluated = evaluate_checkpoint(shared_run / "best.pt", "test", log=lines.append)
    assert {n: v["top1"] for n, v in evaluated["nets"].items()} == cal["top1_after"]
    assert "BN statistics calibrated on 64 training images" in lines[0]
    # an extracted sub-net carries its calibrated statistics: same outputs as the DDNN
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        for name in ("resnet14", "resnet8", "d1-2-1"):
            torch.testing.assert_close(run.method.extract(name).eval()(x), run.method.predict(x, name))
        # and without calibration the shared BN gives different outputs for the sub-net
        raw = open_run(shared_run, calibrated=False)
        assert not torch.allclose(raw.method.predict(x, "resnet8"), run.method.predict(x, "resnet8"))


def test_calibrate_private_bn_run_updates_the_nets_own_statistics(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert cmd_calibrate(ns(run=str(copy), which="last", batches=2, batch_size=None, split="val", seed=3)) == 0
    cal = load_checkpoint(copy / "last.pt")["calibration"]
    run = open_run(copy, "last")
    bn = run.method.model.stem[1].norms["resnet8"]
    torch.testing.assert_close(bn.running_mean, cal["nets"]["resnet8"]["model.stem.1"]["mean"])
    assert cal["split"] == "val" and math.isfinite(sum(cal["top1_after"].values()))


# -- latency --------------------------------------------------------------------------------
def test_summary_quantiles_by_hand():
    from ddnn.deploy.latency import summarize

    s = summarize([float(v) for v in range(1, 12)])  # 1..11: median 6; inclusive deciles at 2 and 10
    assert s == {"median": 6.0, "p10": 2.0, "p90": 10.0, "repeats": 11}
    assert summarize([3.0]) == {"median": 3.0, "p10": 3.0, "p90": 3.0, "repeats": 1}


def test_interleaved_timing_tells_a_slow_function_from_a_fast_one():
    import time

    from ddnn.deploy.latency import time_interleaved

    calls = []
    slow = lambda x: (calls.append("slow"), time.sleep(0.004))  # noqa: E731
    fast = lambda x: calls.append("fast")  # noqa: E731
    s_slow, s_fast = time_interleaved([slow, fast], torch.zeros(1), warmup=2, repeats=5)
    assert s_slow["repeats"] == s_fast["repeats"] == 5
    assert s_slow["median"] >= 4.0 > s_fast["median"]  # sleep() never returns early
    # warm-up in order, then the order rotates every repeat
    assert calls[:4] == ["slow", "fast"] * 2 and calls[4:8] == ["slow", "fast", "fast", "slow"]
