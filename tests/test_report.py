"""`ddnn report` on run folders in the real on-disk format: pooling seeds, labels, the paired
difference, the files it writes, and one-line errors for folders that are not finished runs."""

import json
import math
import statistics

import pytest
import yaml
from matplotlib.image import imread

from ddnn.config import to_dict
from ddnn.experiments.report import build_report
from ddnn.experiments.runs import curves, group_runs, read_run
from ddnn.experiments import train
from ddnn.errors import DdnnError

# The nets of the tiny config (ResNet-14 DDNN holding ResNet-8): blocks, params, MACs.
NETS = {"resnet14": ([2, 2, 2], 5_200, 310_000), "resnet8": ([1, 1, 1], 2_100, 120_000)}
MACS_NOTE = "MACs = FLOPs/2 counted by torch.utils.flop_counter (convs + linear), one image"
PNG = b"\x89PNG\r\n\x1a\n"


def write_run(folder, cfg, top1, best=None, latency_ms=None, epochs=3):
    """A finished run folder as `ddnn train` (and `ddnn profile` with `latency_ms`) would leave it."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    best = best or top1
    results = {
        "method": cfg.method.name, "dataset": cfg.data.name, "model": cfg.model.name, "epochs": epochs,
        "seed": cfg.train.seed, "split": "test", "selected_on": "val", "macs_note": MACS_NOTE,
        "nets": {n: {"blocks": b, "params": p, "macs": m, "top1": top1[n], "best_top1": best[n], "val_top1": top1[n]}
                 for n, (b, p, m) in NETS.items()},
    }
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    with open(folder / "metrics.jsonl", "w") as f:
        for epoch in range(1, epochs + 1):
            f.write(json.dumps({"epoch": epoch, "lr": 0.05, "losses": {f"ce.{n}": 1.0 / epoch for n in NETS},
                                "train_top1": top1, "val_top1": {n: top1[n] - (epochs - epoch) for n in NETS},
                                "seconds": 1.0}) + "\n")
    if latency_ms is not None:
        one = lambda ms: {"median": ms, "p10": ms * 0.9, "p90": ms * 1.1}  # noqa: E731
        profile = {"device": "cpu", "threads": 2, "precision": "fp32", "batch_sizes": [1, 32], "nets": {
            n: {"blocks": b, "params": p, "macs": m, "top1": None,
                "latency_ms": {"1": {"standalone": one(latency_ms[n]), "ddnn": one(latency_ms[n] * 1.2), "ratio": 1.2},
                               "32": {"standalone": one(20.0), "ddnn": one(24.0), "ratio": 1.2}},
                "peak_memory_bytes": {"1": 1000, "32": 32000}}
            for n, (b, p, m) in NETS.items()}}
        (folder / "profile.json").write_text(json.dumps(profile))
    return folder


# top-1 of resnet14 / resnet8 per seed, and hand-computed mean and sample std (ddof=1)
EKD = [{"resnet14": 98.0, "resnet8": 97.0}, {"resnet14": 98.4, "resnet8": 97.0}, {"resnet14": 99.0, "resnet8": 98.0}]
IND = [{"resnet14": 99.0, "resnet8": 96.0}, {"resnet14": 99.2, "resnet8": 96.5}, {"resnet14": 99.4, "resnet8": 97.0}]


@pytest.fixture
def study(tiny_config, tmp_path):
    """3 seeds of EKD and 3 of individual training, as separate run folders under one parent."""
    root = tmp_path / "study"
    for seed, (ekd, ind) in enumerate(zip(EKD, IND)):
        write_run(root / f"ekd-{seed}", tiny_config(f"train.seed={seed}"), ekd)
        write_run(root / f"individual-{seed}", tiny_config("method=individual", f"train.seed={seed}"), ind)
    return root


def quiet(*_):
    pass


def by_label(report):
    return {g["label"]: g for g in report["groups"]}


def net(group, name):
    return next(n for n in group["nets"] if n["name"] == name)


def test_seeds_of_one_config_pool_into_mean_and_sample_std(study, tmp_path):
    report = build_report([study], tmp_path / "out", log=quiet)
    groups = by_label(report)
    assert list(groups) == ["ekd resnet14", "individual resnet14"]
    ekd = groups["ekd resnet14"]
    assert ekd["n"] == 3 and ekd["seeds"] == [0, 1, 2] and ekd["method"] == "ekd"
    assert [n["name"] for n in ekd["nets"]] == ["resnet14", "resnet8"]  # results.json order: full net first
    top1 = net(ekd, "resnet14")["top1"]
    assert top1["n"] == 3 and top1["mean"] == pytest.approx(98.4667, abs=1e-4) and top1["std"] == pytest.approx(0.5033, abs=1e-4)
    assert net(ekd, "resnet8")["top1"]["std"] == pytest.approx(statistics.stdev([97.0, 97.0, 98.0]))
    assert net(groups["individual resnet14"], "resnet14")["top1"]["mean"] == pytest.approx(99.2)
    assert net(groups["individual resnet14"], "resnet14")["top1"]["std"] == pytest.approx(0.2)
    first = net(ekd, "resnet14")
    assert (first["blocks"], first["params"], first["macs"]) == ([2, 2, 2], 5_200, 310_000)

    # report.json holds the same numbers; report.md shows them with 2 decimals
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["groups"] == json.loads(json.dumps(report["groups"]))
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| ekd resnet14") and "| resnet14" in line)
    assert [c.strip() for c in row.strip("|").split("|")] == \
        ["ekd resnet14", "resnet14", "2-2-2", "5.20K", "310.00K", "3", "98.47 ± 0.50", "98.47 ± 0.50"]
    assert "mean ± sample std (ddof=1)" in md and "test split" in md and MACS_NOTE in md
    assert "latency ms" not in md and "ddnn profile --run DIR" in md


def test_two_groups_get_a_paired_difference_first_minus_second(study, tmp_path):
    report = build_report(sorted(study.glob("ekd-*")) + sorted(study.glob("individual-*")), tmp_path / "out", log=quiet)
    comparison = report["comparison"]
    assert (comparison["first"], comparison["second"]) == ("ekd resnet14", "individual resnet14")
    rows = {r["net"]: r for r in comparison["nets"]}
    assert rows["resnet14"]["top1"]["diff"] == pytest.approx(98.4667 - 99.2, abs=1e-4)
    se = math.sqrt(statistics.variance([98.0, 98.4, 99.0]) / 3 + statistics.variance([99.0, 99.2, 99.4]) / 3)
    assert rows["resnet14"]["top1"]["se"] == pytest.approx(se)
    assert rows["resnet8"]["top1"]["diff"] == pytest.approx(97.3333 - 96.5, abs=1e-4)
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## ekd resnet14 − individual resnet14" in md
    assert f"| resnet14 | -0.73 ± {se:.2f}" in md and "| resnet8  | +0.83 ±" in md

    # given the other way round, the difference changes sign
    swapped = build_report(sorted(study.glob("individual-*")) + sorted(study.glob("ekd-*")), tmp_path / "out2", log=quiet)
    assert swapped["comparison"]["nets"][0]["top1"]["diff"] == pytest.approx(99.2 - 98.4667, abs=1e-4)


def test_a_run_of_another_config_is_its_own_group_with_a_distinguishing_label(study, tiny_config, tmp_path):
    write_run(study / "ekd-T3", tiny_config("method.temperature=3.0"), {"resnet14": 97.5, "resnet8": 96.25})
    report = build_report([study], tmp_path / "out", log=quiet)
    groups = by_label(report)
    assert set(groups) == {"ekd resnet14 (method.temperature=1.0)", "ekd resnet14 (method.temperature=3.0)",
                           "individual resnet14"}
    single = groups["ekd resnet14 (method.temperature=3.0)"]
    assert single["n"] == 1 and net(single, "resnet14")["top1"] == {"mean": 97.5, "std": None, "n": 1, "values": [97.5]}
    assert groups["ekd resnet14 (method.temperature=1.0)"]["n"] == 3
    assert report["comparison"] is None  # only for exactly two groups
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "97.50 ± -" in md and "96.25 ± -" in md and "−" not in md


def test_seed_name_data_root_and_runtime_keys_do_not_split_a_group(tiny_config, tmp_path):
    top1 = {"resnet14": 90.0, "resnet8": 80.0}
    write_run(tmp_path / "a", tiny_config("train.seed=1", "name=first", "runtime.threads=1"), top1)
    write_run(tmp_path / "b", tiny_config("train.seed=2", "name=second", "runtime.progress=true",
                                          "runtime.device=cpu", "data.root=/elsewhere"), top1)
    write_run(tmp_path / "c", tiny_config("train.seed=3", "optim.lr=0.1"), top1)
    groups = group_runs([read_run(tmp_path / d) for d in "abc"])
    assert [len(g.runs) for g in groups] == [2, 1]
    assert [g.label for g in groups] == ["ekd resnet14 (optim.lr=0.05)", "ekd resnet14 (optim.lr=0.1)"]


def test_a_parent_folder_expands_to_the_runs_below_it(study, tmp_path):
    nested = study / "more" / "ekd-9"
    write_run(nested, yaml_config(study / "ekd-0", seed=9), EKD[0])
    # the parent and one of its runs given together: that run is counted once
    report = build_report([study, study / "ekd-0"], tmp_path / "out", log=quiet)
    assert {g["label"]: g["n"] for g in report["groups"]} == {"ekd resnet14": 4, "individual resnet14": 3}
    assert str(nested) in by_label(report)["ekd resnet14"]["runs"]


def yaml_config(run, seed):
    """The config of `run` with another seed, via the on-disk YAML (the Config is rebuilt from it)."""
    from ddnn.config import from_dict

    data = yaml.safe_load((run / "config.yaml").read_text())
    data["train"]["seed"] = seed
    return from_dict(data)


def test_pngs_are_valid_images_and_latency_adds_a_panel_and_a_column(tiny_config, tmp_path):
    fast = {"resnet14": 0.8, "resnet8": 0.4}
    for seed in range(2):
        write_run(tmp_path / "runs" / f"ekd-{seed}", tiny_config(f"train.seed={seed}"), EKD[seed],
                  latency_ms={n: ms * (1 + 0.1 * seed) for n, ms in fast.items()})
        write_run(tmp_path / "runs" / f"ind-{seed}", tiny_config("method=individual", f"train.seed={seed}"), IND[seed],
                  latency_ms=fast if seed == 0 else None)  # one of the two not profiled
    lines = []
    report = build_report([tmp_path / "runs"], tmp_path / "out", log=lines.append)
    groups = by_label(report)
    latency = net(groups["ekd resnet14"], "resnet14")["latency_ms"]
    assert latency["mean"] == pytest.approx(0.84) and latency["std"] == pytest.approx(statistics.stdev([0.8, 0.88]))
    assert net(groups["individual resnet14"], "resnet14")["latency_ms"] is None  # not every run was profiled
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "latency ms" in md.splitlines()[5] and "0.840 ± 0.057" in md
    assert "cpu, 2 threads, fp32" in md
    assert md.rstrip("\n") in "\n".join(lines)  # the table is logged, then the paths
    assert f"tradeoff: {tmp_path / 'out' / 'tradeoff.png'}" in lines

    shapes = {}
    for name in ("tradeoff", "curves"):
        path = report[name]
        assert path == tmp_path / "out" / f"{name}.png" and path.read_bytes()[:8] == PNG
        assert path.stat().st_size > 20_000
        image = imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 300
        shapes[name] = image.shape

    # without any profile.json the latency panel is left out: a narrower picture
    plain = tmp_path / "plain"
    for seed in range(2):
        write_run(plain / f"ekd-{seed}", tiny_config(f"train.seed={seed}"), EKD[seed])
    narrow = imread(build_report([plain], tmp_path / "out2", log=quiet)["tradeoff"])
    assert narrow.shape[1] < 0.75 * shapes["tradeoff"][1]


def test_curves_are_per_epoch_means_on_the_split_the_run_evaluated(tiny_config, tmp_path):
    runs = [read_run(write_run(tmp_path / f"r{s}", tiny_config(f"train.seed={s}"), EKD[s], epochs=2)) for s in range(2)]
    c = curves(group_runs(runs)[0])
    assert c["split"] == "val" and list(c["top1"]) == ["resnet14", "resnet8"]
    assert c["top1"]["resnet14"]["epoch"] == [1, 2]
    assert c["top1"]["resnet14"]["mean"] == pytest.approx([(97.0 + 97.4) / 2, (98.0 + 98.4) / 2])
    assert c["loss"]["mean"] == pytest.approx([2.0, 1.0])  # two nets' CE of 1/epoch, summed

    # a run without a validation split logs test_top1 each epoch
    folder = tmp_path / "noval"
    write_run(folder, tiny_config("data.val_fraction=0"), EKD[0], epochs=2)
    lines = (folder / "metrics.jsonl").read_text().replace('"val_top1"', '"test_top1"')
    (folder / "metrics.jsonl").write_text(lines)
    c = curves(group_runs([read_run(folder)])[0])
    assert c["split"] == "test" and c["top1"]["resnet8"]["mean"] == [96.0, 97.0]


def test_bad_folders_are_one_line_errors_naming_the_problem(tiny_config, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DdnnError, match=r"run folder .*nowhere does not exist"):
        build_report([tmp_path / "nowhere"], out, log=quiet)

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("hi")
    with pytest.raises(DdnnError, match=r"empty has no results.json .*is it a finished ddnn run\? \(train it with ddnn train\)"):
        build_report([empty], out, log=quiet)

    broken = write_run(tmp_path / "broken", tiny_config(), EKD[0])
    (broken / "results.json").write_text('{"nets": {"resnet14": ')
    with pytest.raises(DdnnError, match=r"broken/results.json is not valid JSON \(line 1"):
        build_report([broken], out, log=quiet)

    (broken / "results.json").write_text("[1, 2]")
    with pytest.raises(DdnnError, match=r"results.json has no 'nets'"):
        build_report([broken], out, log=quiet)

    bad_yaml = write_run(tmp_path / "bad_yaml", tiny_config(), EKD[0])
    (bad_yaml / "config.yaml").write_text("data: [unclosed\n")
    with pytest.raises(DdnnError, match=r"bad_yaml/config.yaml is not valid YAML"):
        build_report([bad_yaml], out, log=quiet)

    (bad_yaml / "config.yaml").unlink()
    with pytest.raises(DdnnError, match=r"bad_yaml has no config.yaml"):
        build_report([bad_yaml], out, log=quiet)

    bad_metrics = write_run(tmp_path / "bad_metrics", tiny_config(), EKD[0])
    with open(bad_metrics / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "los\n')
    with pytest.raises(DdnnError, match=r"metrics.jsonl line 4 is not valid JSON"):
        build_report([bad_metrics], out, log=quiet)

    bad_profile = write_run(tmp_path / "bad_profile", tiny_config(), EKD[0])
    (bad_profile / "profile.json").write_text("{}")
    with pytest.raises(DdnnError, match=r"profile.json has no 'nets'; run ddnn profile --run"):
        build_report([bad_profile], out, log=quiet)
    assert not out.exists()  # nothing is written before every run was read


def test_end_to_end_on_two_trained_seeds(tiny_config, tmp_path):
    results = [train(tiny_config("train.epochs=1", f"train.seed={seed}"), tmp_path / "runs" / f"s{seed}", log=quiet)
               for seed in (0, 1)]
    report = build_report([tmp_path / "runs"], tmp_path / "report", log=quiet)
    (group,) = report["groups"]
    assert group["label"] == "ekd resnet14" and group["n"] == 2 and group["seeds"] == [0, 1]
    for entry in group["nets"]:
        values = [r["nets"][entry["name"]]["top1"] for r in results]
        assert entry["top1"]["values"] == values and entry["top1"]["mean"] == pytest.approx(statistics.fmean(values))
        assert entry["macs"] == results[0]["nets"][entry["name"]]["macs"]
    for name in ("tradeoff", "curves"):
        assert report[name].read_bytes()[:8] == PNG
    assert "| ekd resnet14 | resnet14 |" in report["markdown"].read_text(encoding="utf-8")
