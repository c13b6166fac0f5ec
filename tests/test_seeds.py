"""`seeds`: one config trained per seed into sibling folders, with the spread written beside them."""

import json
import statistics

import pytest

from ddnn.cli import main
from ddnn.config import load_config
from ddnn.experiments.seeds import parse_seeds
from ddnn.experiments import train
from ddnn.errors import DdnnError


def test_seeds_train_sibling_runs_and_aggregate(tiny_config, tmp_path):
    out = tmp_path / "seeds"
    cfg = tiny_config("train.epochs=1", "seeds=[3,1]")
    summary = train(cfg, out, log=lambda *_: None)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["seed1", "seed3"]
    per_seed = {s: json.loads((out / f"seed{s}" / "results.json").read_text()) for s in (3, 1)}
    assert per_seed[3]["seed"] == 3 and per_seed[1]["seed"] == 1
    # each seed folder is a plain single run: its resolved config has no `seeds`
    assert "seeds: null" in (out / "seed3" / "config.yaml").read_text()
    group = json.loads((out / "report.json").read_text())["groups"]
    assert len(group) == 1 and group[0]["n"] == 2 and group[0]["seeds"] == [3, 1]
    for net in group[0]["nets"]:
        values = [per_seed[s]["nets"][net["name"]]["top1"] for s in (3, 1)]
        assert net["top1"]["mean"] == pytest.approx(statistics.mean(values))
        assert net["top1"]["std"] == pytest.approx(statistics.stdev(values))
        best = [per_seed[s]["nets"][net["name"]]["best_top1"] for s in (3, 1)]
        assert net["best_top1"]["mean"] == pytest.approx(statistics.mean(best))
    assert summary["groups"][0]["n"] == 2 and (out / "report.md").is_file() and (out / "tradeoff.png").is_file()
    # the same seed trained alone gives the same numbers as inside the seeds run
    alone = train(tiny_config("train.epochs=1", "train.seed=1"), tmp_path / "alone", log=lambda *_: None)
    assert {n: v["top1"] for n, v in alone["nets"].items()} == {n: v["top1"] for n, v in per_seed[1]["nets"].items()}


def test_seeds_flag_on_the_cli(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path / "r"), "--seeds", "0,2", "data.name=synthetic", "data.synthetic.size=80",
            "data.synthetic.image_size=8", "data.synthetic.classes=2", "data.val_fraction=0.25", "data.test_fraction=0.25",
            "model.name=resnet8", "model.subnets=[]", "model.widths=[2,2,2]", "train.epochs=1", "runtime.progress=false"]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir()) == ["seed0", "seed2"]
    assert "2 run(s), seeds 0, 2" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["0,x", "1,1", "-1", ""])
def test_bad_seed_lists(text):
    with pytest.raises(DdnnError, match="--seeds"):
        parse_seeds(text)


@pytest.mark.parametrize("value", ["[]", "[1,1]", "[-2]"])
def test_bad_seeds_key(value):
    with pytest.raises(DdnnError, match="'seeds'"):
        load_config(None, [f"seeds={value}"])


def test_seeds_refuse_a_full_out_folder(tiny_config, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(DdnnError, match="not empty"):
        train(tiny_config("seeds=[0]"), tmp_path, log=lambda *_: None)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
