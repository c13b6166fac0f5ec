"""Multi-process training with torchrun on 2 CPU processes (gloo), checked against one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddnn.checkpoint import load_checkpoint

TINY = ["data.name=synthetic", "data.synthetic.size=160", "data.synthetic.image_size=16", "data.synthetic.classes=4",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "data.eval_batch_size=50", "model.name=resnet14",
        "model.subnets=[resnet8]", "model.widths=[4,8,8]", "optim.lr=0.05", "schedule.warmup_epochs=0",
        "runtime.progress=false", "runtime.precision=fp32", "runtime.threads=1"]
WORKER = Path(__file__).parent / "helpers" / "ddp_linear_worker.py"


def launch(nproc: int, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_processes_equal_one_without_batchnorm(tmp_path):
    """Global batch 33 split 17/16 (and a last batch of 5 split 3/2): slices weighted by their share give
    the one-process gradient, so the weights agree to float rounding after 3 epochs."""
    args = [*TINY, "method.name=linear_probe", "data.batch_size=33", "data.augment=[crop,flip]", "train.epochs=3"]
    launch(2, [str(WORKER), str(tmp_path / "two"), *args], tmp_path)
    launch(1, [str(WORKER), str(tmp_path / "one"), *args], tmp_path)
    two, one = load_checkpoint(tmp_path / "two" / "last.pt"), load_checkpoint(tmp_path / "one" / "last.pt")
    assert two["config"]["distributed"]["world_size"] == 2 and one["config"]["distributed"]["world_size"] == 1
    assert two["config"]["distributed"]["per_rank_batch"] == 17
    for key, value in one["state"].items():
        torch.testing.assert_close(two["state"][key], value, rtol=1e-5, atol=1e-6)
    for a, b in zip(two["history"], one["history"]):  # metrics reduced over both processes
        assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)
        assert a["train_top1"] == pytest.approx(b["train_top1"], abs=1e-9)
        assert a["val_top1"] == b["val_top1"]


METHOD_ARGS = {
    "ekd": ["method.name=ekd"],
    "individual": ["method.name=individual"],
    # two of three sub-nets per step: some private BN gets no gradient in a step (DDP must allow it)
    "ekd-sandwich": ["method.name=ekd", "method.sample=sandwich", "model.name=resnet20",
                     "model.subnets=[resnet14,resnet8,[1,2,1]]"],
    "online": ["method.name=online", "method.online.students=2", "model.cheap=shift", "model.name=resnet8",
               "model.subnets=[]"],
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    from ddnn.cli import main

    out = tmp_path_factory.mktemp("teacher") / "run"
    assert main(["train", "--out", str(out), *TINY, "data.batch_size=32", "method.name=individual",
                 "model.subnets=[]", "train.epochs=1"]) == 0
    return out


@pytest.mark.parametrize("method", [*METHOD_ARGS, "kd"])
def test_cli_under_torchrun_matches_one_process(tmp_path, method, request):
    """The real CLI on 2 processes: one run folder written by rank 0, the launch in config.yaml, metrics over
    the whole training set, and the same batches as one process. Stated tolerance: BatchNorm normalises each
    process's half batch, so the runs drift apart slowly; the epoch-1 training loss agrees within 3 %."""
    if method == "kd":  # with the sskd clipping: two backward passes per step, gradients averaged by hand
        chosen = ["method.name=kd", f"method.kd.teachers=[{request.getfixturevalue('teacher')}]",
                  "method.kd.clip=sskd", "model.name=resnet8", "model.subnets=[]"]
    else:
        chosen = METHOD_ARGS[method]
    args = [*TINY, *chosen, "data.batch_size=32", "train.epochs=2"]
    if method == "individual":  # through ddnn-torchrun: torchrun's own launch behind ddnn's error handling
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run([sys.executable, "-m", "ddnn.launch", "--standalone", "--nproc_per_node=2", "train",
                               "--out", "two", *args], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        launch(2, ["-m", "ddnn", "train", "--out", "two", *args], tmp_path)
    subprocess.run([sys.executable, "-m", "ddnn", "train", "--out", "one", *args], cwd=tmp_path, check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    two = tmp_path / "two"
    assert sorted(p.name for p in two.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "results.json"]
    cfg = (two / "config.yaml").read_text()
    assert "world_size: 2" in cfg and "per_rank_batch: 16" in cfg and "lr: 0.05" in cfg
    results = json.loads((two / "results.json").read_text())
    assert results["processes"] == 2
    metrics = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    n = results["train_size"]
    for record in metrics:  # top-1 counted over all n training images, not one process's half
        for net, top1 in record["train_top1"].items():
            if method == "ekd-sandwich" and net in ("resnet14", "resnet8"):  # sampled: counted over its own steps
                continue
            assert abs(top1 * n / 100 - round(top1 * n / 100)) < 1e-6
    loss_two, loss_one = (sum(r[0]["losses"].values()) for r in (metrics, single))
    assert loss_two == pytest.approx(loss_one, rel=0.03)
    assert set(metrics[0]["losses"]) == set(single[0]["losses"])


def test_ddnn_torchrun_keeps_a_bad_input_to_one_line_and_exit_code_2(tmp_path):
    """torchrun itself adds a ~40-line ChildFailedError report and exits 1; ddnn-torchrun passes on
    ddnn's one line (printed once, by rank 0) and its exit code 2, and runs a good command as torchrun does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    base = [sys.executable, "-m", "ddnn.launch", "--standalone", "--nproc_per_node=2"]
    bad = subprocess.run([*base, "train", "nosuchkey=1"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.splitlines() == [bad.stderr.strip()] and bad.stderr.startswith("ddnn: error: unknown config key")
    assert bad.stdout == ""
    good = subprocess.run([*base, "list"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert good.returncode == 0 and good.stdout.count("models:") == 2 and good.stderr == "", good.stderr
