"""The training loop end to end on tiny synthetic data: the run-output contract and its numbers."""

import dataclasses
import json
import math

import pytest
import torch
import yaml

from ddnn.config import from_dict
from ddnn.checkpoint import load_checkpoint
from ddnn.engine.evaluation import evaluate_checkpoint, load_method
from ddnn.experiments import train


def test_run_folder_contract(tiny_config, tmp_path):
    cfg = tiny_config()
    out = tmp_path / "run"
    results = train(cfg, out, log=lambda *_: None)
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "results.json"]

    # config.yaml is the fully resolved config: it rebuilds the same Config, with the launch and run id written in
    launch = dataclasses.replace(cfg.distributed, world_size=1, per_rank_batch=32, lr=0.05)
    saved = from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    assert saved == dataclasses.replace(cfg, distributed=launch, run_id=results["run_id"])
    assert len(results["run_id"]) == 16

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert set(m["losses"]) == {"ce.resnet14", "ce.resnet8", "kl.resnet8"}  # ddnn's recipe: no attention term
        assert set(m["val_top1"]) == set(m["train_top1"]) == {"resnet14", "resnet8"}
        assert all(math.isfinite(v) for v in m["losses"].values()) and m["seconds"] > 0
    # `lr` is the LR of each epoch's last step; cosine from 0.05 stepped every iteration, no warm-up
    steps = math.ceil(results["train_size"] / 32)
    cosine = lambda step: 0.05 * 0.5 * (1 + math.cos(math.pi * step / (2 * steps)))  # noqa: E731
    assert lines[0]["lr"] == pytest.approx(cosine(steps - 1)) and lines[1]["lr"] == pytest.approx(cosine(2 * steps - 1))

    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    for key in ("method", "dataset", "model", "epochs", "seed", "nets"):
        assert key in results
    assert results["method"] == "ekd" and results["epochs"] == 2 and results["dataset"] == "synthetic"
    full, sub = results["nets"]["resnet14"], results["nets"]["resnet8"]
    assert full["blocks"] == [2, 2, 2] and sub["blocks"] == [1, 1, 1]
    assert full["params"] > sub["params"] > 0 and full["macs"] > sub["macs"] > 0
    assert 0 <= sub["top1"] <= 100


def test_results_match_a_fresh_evaluation_of_the_checkpoint(tiny_config, tmp_path):
    out = tmp_path / "run"
    results = train(tiny_config(), out, log=lambda *_: None)
    again = evaluate_checkpoint(out / "last.pt", "test", log=lambda *_: None)
    for name, net in results["nets"].items():
        assert again["nets"][name]["top1"] == net["top1"]
        assert again["nets"][name]["params"] == net["params"]
    best = evaluate_checkpoint(out / "best.pt", "test", log=lambda *_: None)
    for name, net in results["nets"].items():
        assert best["nets"][name]["top1"] == net["best_top1"]


def test_checkpoint_is_plain_data_and_reloads_the_weights(tiny_config, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(), out, log=lambda *_: None)
    ckpt = torch.load(out / "last.pt", weights_only=True)  # would raise if it held code
    assert ckpt["epoch"] == 2
    method, _ = load_method(out / "last.pt")
    for key, value in method.state_dict().items():
        torch.testing.assert_close(value, ckpt["state"][key].to(value.dtype))
    assert load_checkpoint(out / "best.pt")["epoch"] in (1, 2)


def test_same_seed_same_run(tiny_config, tmp_path):
    a = train(tiny_config("runtime.precision=fp32"), tmp_path / "a", log=lambda *_: None)
    b = train(tiny_config("runtime.precision=fp32"), tmp_path / "b", log=lambda *_: None)
    assert a["nets"] == b["nets"]
    la = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
    assert [strip(x) for x in la] == [strip(x) for x in lb]


def test_individual_trains_one_net_per_depth(tiny_config, tmp_path):
    results = train(tiny_config("method.name=individual"), tmp_path / "run", log=lambda *_: None)
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(metrics["losses"]) == {"ce.resnet14", "ce.resnet8"}
    # each depth is its own standalone net: stored parameters = the sum of both nets
    nets = results["nets"]
    assert results["total_params"] == nets["resnet14"]["params"] + nets["resnet8"]["params"]


def test_ddnn_method_has_no_distillation_terms(tiny_config, tmp_path):
    train(tiny_config("method.name=ddnn"), tmp_path / "run", log=lambda *_: None)
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(metrics["losses"]) == {"ce.resnet14", "ce.resnet8"}


def test_training_learns_the_synthetic_task(tiny_config, tmp_path):
    # no crop: the synthetic classes are fixed pixel patterns, which a shift would scramble
    results = train(tiny_config("train.epochs=15", "data.synthetic.size=320", "data.augment=[]"), tmp_path / "run",
                    log=lambda *_: None)
    assert results["nets"]["resnet14"]["top1"] >= 90
    assert results["nets"]["resnet8"]["top1"] >= 90
