"""kd end to end through the CLI on tiny synthetic data: teachers recorded in results.json, teachers
refused with one line before anything is written, and a two-stage pipeline in one command."""

import hashlib
import json

import pytest
import torch

from ddnn.cli import main
from ddnn.engine.evaluation import evaluate_checkpoint

DATA = ["data.name=synthetic", "data.synthetic.size=120", "data.synthetic.image_size=12", "data.synthetic.classes=3",
        "data.batch_size=32", "data.eval_batch_size=64", "data.val_fraction=0.2", "data.test_fraction=0.2",
        "model.subnets=[]", "train.epochs=1", "runtime.progress=false", "schedule.warmup_epochs=0", "runtime.precision=fp32"]
TEACHER = ["method=individual", "model.name=resnet14", "model.widths=[4,8,16]"]
STUDENT = ["method=kd", "model.name=resnet8", "model.widths=[4,8,8]"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kd") / "teacher"
    assert main(["train", "--out", str(out), *DATA, *TEACHER, "train.epochs=2"]) == 0
    return out


def test_kd_run_records_teachers_accuracy_and_hash(teacher_run, tmp_path):
    out = tmp_path / "student"
    assert main(["train", "--out", str(out), *DATA, *STUDENT,
                 f"method.kd.teachers=[{teacher_run},{teacher_run / 'last.pt'}]", "method.kd.teacher_model=resnet14"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "kd" and list(results["nets"]) == ["resnet8"]
    assert [t["checkpoint"] for t in results["teachers"]] == [str(teacher_run / "best.pt"), str(teacher_run / "last.pt")]
    for t in results["teachers"]:
        path = t["checkpoint"]
        assert t["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert t["val_top1"] == evaluate_checkpoint(path, "val", log=lambda *_: None)["nets"]["resnet14"]["top1"]
    assert results["kd"]["pairs"] == [[0, 1], [1, 2], [2, 3], [0, 2], [1, 3], [0, 3]]
    assert results["kd"]["adapters"] == ["t0_p3", "t1_p3"]  # 16 teacher channels -> 8 at the last point
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert set(metrics["losses"]) == {"ce.resnet8", "kl.resnet8", "gram.resnet8"}
    # the student's size excludes the adapters; the checkpoint reloads for eval without the teachers
    params = results["nets"]["resnet8"]["params"]
    assert results["total_params"] == params + 2 * (16 * 8 + 2 * 8)
    assert evaluate_checkpoint(out / "last.pt", log=lambda *_: None)["nets"]["resnet8"]["top1"] == results["nets"]["resnet8"]["top1"]


def refusal(tmp_path, capsys, *overrides):
    out = tmp_path / "refused"
    code = main(["train", "--out", str(out), *DATA, *STUDENT, *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and not out.exists()  # one line, nothing written
    return err


def test_teacher_refusals(teacher_run, tmp_path, capsys):
    assert "needs at least one teacher" in refusal(tmp_path, capsys)
    assert "does not exist" in refusal(tmp_path, capsys, f"method.kd.teachers=[{tmp_path / 'nope'}]")
    other = ["data.synthetic.classes=4"]
    assert "predicts 3 classes but the student's data has 4" in refusal(
        tmp_path, capsys, *other, f"method.kd.teachers=[{teacher_run}]")
    assert "[3, 12, 12] inputs but the student's data is [3, 16, 16]" in refusal(
        tmp_path, capsys, "data.synthetic.image_size=16", f"method.kd.teachers=[{teacher_run}]")
    assert "not the resnet32 that method.kd.teacher_model asks for" in refusal(
        tmp_path, capsys, f"method.kd.teachers=[{teacher_run}]", "method.kd.teacher_model=resnet32")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert "is not a ddnn checkpoint" in refusal(tmp_path, capsys, f"method.kd.teachers=[{foreign}]")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((teacher_run / "best.pt").read_bytes()[:300])
    assert "corrupt or truncated" in refusal(tmp_path, capsys, f"method.kd.teachers=[{corrupt}]")
    assert "method.kd.cross" in refusal(tmp_path, capsys, f"method.kd.teachers=[{teacher_run}]", "method.kd.cross=7")
    assert "needs 5 feature points" in refusal(tmp_path, capsys, f"method.kd.teachers=[{teacher_run}]",
                                                "method.kd.cross=4")
    assert "did you mean 'gram_weight'" in refusal(tmp_path, capsys, "method.kd.gram_weigth=2")


def test_two_stage_pipeline_in_one_command(tmp_path, capsys):
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(f"""
name: tiny-two-stage
common: {{data: {{name: synthetic, synthetic: {{size: 120, image_size: 12, classes: 3}}, batch_size: 32,
                 val_fraction: 0.2}}, model: {{subnets: []}}, train: {{epochs: 1}}, runtime: {{progress: false, precision: fp32}}}}
stages:
  - {{name: teacher, seeds: [0, 1], config: {{model: {{name: resnet14, widths: [4, 8, 16]}}, method: individual}}}}
  - name: assistant
    teachers: [teacher]
    config: {{model: {{name: resnet8, widths: [4, 8, 16]}}, method: {{name: kd, kd: {{cross: 2}}}}}}
  - {{name: student, teachers: [assistant], config: {{model: {{name: resnet8, widths: [2, 4, 8]}}, method: kd}}}}
""")
    out = tmp_path / "out"
    assert main(["train", "-c", str(cfg), "--out", str(out)]) == 0
    for folder in ("teacher/seed0", "teacher/seed1", "assistant", "student"):
        assert (out / folder / "results.json").is_file()
    assistant = json.loads((out / "assistant" / "results.json").read_text())
    student = json.loads((out / "student" / "results.json").read_text())
    assert [t["path"] for t in assistant["teachers"]] == [str(out / "teacher/seed0"), str(out / "teacher/seed1")]
    assert [t["path"] for t in student["teachers"]] == [str(out / "assistant")]
    assert student["teachers"][0]["model"] == "resnet8" and student["teachers"][0]["method"] == "kd"
    assert assistant["kd"]["pairs"] == [[0, 1], [1, 2], [2, 3], [0, 2], [1, 3]]
    assert json.loads((out / "teacher/seed1/results.json").read_text())["seed"] == 1
    # the same command again resumes: every finished stage is reused, nothing retrained
    capsys.readouterr()
    stamp = (out / "student" / "results.json").stat().st_mtime_ns
    assert main(["train", "-c", str(cfg), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("reused") == 4
    assert (out / "student" / "results.json").stat().st_mtime_ns == stamp
    # a pipeline with a teacher that is neither a stage nor a path is refused before anything runs
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("teachers: [assistant]", "teachers: [asistant]"))
    assert main(["train", "-c", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "neither an earlier stage" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_pipeline_with_seeds_shares_stages_that_have_their_own(tmp_path):
    from ddnn.experiments.pipeline import Pipeline

    cfg = tmp_path / "pipe.yaml"
    cfg.write_text("""
name: p
common: {data: {name: synthetic}, model: {subnets: []}}
stages:
  - {name: teacher, seeds: [0, 1], config: {model: {name: resnet14}, method: individual}}
  - {name: student, teachers: [teacher], config: {model: {name: resnet8}, method: {name: kd, kd: {cross: 2}}}}
""")
    pipe = Pipeline(str(cfg), ["train.epochs=3"])
    runs = pipe.configs(tmp_path / "out", seed=5)
    got = [(stage, str(folder.relative_to(tmp_path / "out")), c.train.seed) for stage, folder, c in runs]
    assert got == [("teacher", "teacher/seed0", 0), ("teacher", "teacher/seed1", 1), ("student", "seed5/student", 5)]
    student = runs[-1][2]
    assert student.method.name == "kd" and student.method.kd.cross == 2 and student.train.epochs == 3
    assert student.method.kd.teachers == [str(tmp_path / "out/teacher/seed0"), str(tmp_path / "out/teacher/seed1")]
    assert student.name == "p-student" and student.model.name == "resnet8"
