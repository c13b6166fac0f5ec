"""Online distillation: the loss against a hand computation, where its gradients go (nothing is
detached), best-student selection on validation, the teacher's extraction, and a run through the CLI
whose default export is the best student."""

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from ddnn.cli import main
from ddnn.engine.evaluation import load_method
from ddnn.config import MethodConfig, OnlineConfig
from ddnn.methods.online import OnlineDistillation, best_student, build_online, online_loss
from ddnn.models import ModelBuilder


pytestmark = pytest.mark.usefixtures("one_thread")


def _softmax(z, t):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_online_loss_equals_a_hand_computation():
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    students = [torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, -2.0]]), torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])]
    y = torch.tensor([0, 1])
    t = 4.0
    losses = online_loss(teacher, students, y, t)
    assert list(losses) == ["ce.teacher", "ce.student0", "kl.student0", "ce.student1", "kl.student1"]

    def ce(z):  # mean over the batch of -log softmax(z)[y]
        return sum(-math.log(_softmax(row, 1.0)[label]) for row, label in zip(z.tolist(), y.tolist())) / len(y)

    def kl(zt, zs):  # T^2 * KL(softmax_T(zt) || softmax_T(zs)), batch mean
        total = 0.0
        for rt, rs in zip(zt.tolist(), zs.tolist()):
            p, q = _softmax(rt, t), _softmax(rs, t)
            total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        return t * t * total / len(zt)

    assert losses["ce.teacher"].item() == pytest.approx(ce(teacher), rel=1e-5)
    for j, z in enumerate(students):
        assert losses[f"ce.student{j}"].item() == pytest.approx(ce(z), rel=1e-5)
        assert losses[f"kl.student{j}"].item() == pytest.approx(kl(teacher, z), rel=1e-5)
    # the T^2 factor: the same KL at T = 1 has no scaling
    assert online_loss(teacher, students, y, 1.0)["kl.student1"].item() == pytest.approx(
        sum(sum(p * math.log(p / q) for p, q in zip(_softmax(a, 1), _softmax(b, 1)))
            for a, b in zip(teacher.tolist(), students[1].tolist())) / 2, rel=1e-5)


def tiny_online(m: int = 3, seed: int = 0) -> OnlineDistillation:
    """m shift-conv ResNet-8 students built the way `method=online` builds them."""
    torch.manual_seed(seed)
    builder = ModelBuilder("resnet8", num_classes=4, in_channels=3, widths=[4, 4, 8], cheap="shift")
    return build_online(MethodConfig(name="online", online=OnlineConfig(students=m, temperature=4.0)), builder)


def batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 12, 12, generator=gen), torch.randint(0, 4, (6,), generator=gen)


def test_forward_train_terms_and_teacher():
    method = tiny_online(m=3)
    x, y = batch()
    losses, logits = method.forward_train(x, y)
    assert set(logits) == {"student0", "student1", "student2", "teacher"}
    assert len(losses) == 1 + 2 * 3
    # the teacher reads the concatenated last-stage maps of all students (3 x 8 channels)
    assert method.head[0].num_features == 24
    feats = [net(x, features=True).stages[-1] for net in method.students]
    assert_close(logits["teacher"], method.head(torch.cat(feats, 1)))
    assert_close(losses["kl.student1"], (4.0 ** 2) * F.kl_div(F.log_softmax(logits["student1"] / 4, 1),
                                                               F.log_softmax(logits["teacher"] / 4, 1),
                                                               reduction="batchmean", log_target=True))


def _grad_norms(method, term: str) -> dict[str, float]:
    method.zero_grad(set_to_none=True)
    losses, _ = method.forward_train(*batch())
    losses[term].backward()
    parts = {"head": method.head, **{f"student{j}": net for j, net in enumerate(method.students)}}
    return {k: sum(0.0 if p.grad is None else p.grad.abs().sum().item() for p in mod.parameters())
            for k, mod in parts.items()}


def test_nothing_is_detached():
    method = tiny_online(m=3)
    teacher_ce = _grad_norms(method, "ce.teacher")
    assert all(v > 0 for v in teacher_ce.values())  # the teacher's CE trains every student's weights
    kl0 = _grad_norms(method, "kl.student0")
    assert kl0["head"] > 0 and kl0["student0"] > 0  # the KL reaches the teacher head and the student
    assert kl0["student1"] > 0  # ... and through the teacher, the other students
    ce0 = _grad_norms(method, "ce.student0")
    assert ce0["student0"] > 0 and ce0["head"] == 0 and ce0["student1"] == 0


def test_teacher_extracts_to_the_same_outputs():
    method = tiny_online(m=2)
    x, y = batch()
    method.train()
    method.forward_train(x, y)  # BN statistics move away from their init
    method.eval()
    for name in method.nets():
        assert_close(method.extract(name).eval()(x), method.predict(x, name), rtol=1e-5, atol=1e-5)


def test_best_student_is_chosen_on_validation():
    names = ["student0", "student1", "student2"]
    assert best_student({"student0": 50.0, "student1": 70.0, "student2": 70.0, "teacher": 90.0}, names) == "student1"
    method = tiny_online(m=3)
    test = {"student0": 80.0, "student1": 60.0, "student2": 70.0, "teacher": 85.0}
    val = {"student0": 55.0, "student1": 75.0, "student2": 65.0, "teacher": 90.0}
    res = method.extra_results({"top1": test, "val_top1": val, "best_top1": test, "best_val_top1": None}, (3, 12, 12))
    assert res["best_student"] == {"name": "student1", "top1": 60.0, "val_top1": 75.0, "selected_on": "val"}
    assert res["best_student_of_best_pt"]["name"] == "student0"  # no val split: falls back to test, says so
    assert res["best_student_of_best_pt"]["selected_on"] == "test"
    assert res["students"]["mean_top1"] == pytest.approx(70.0) and res["students"]["std_top1"] == pytest.approx(10.0)
    assert res["teacher_top1"] == 85.0
    assert method.default_net(lambda: val) == "student1"


def test_online_run_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "name=tiny", "data.name=synthetic", "data.synthetic.size=160",
            "data.synthetic.image_size=16", "data.synthetic.classes=4", "data.batch_size=32", "data.val_fraction=0.2",
            "data.test_fraction=0.2", "model.name=resnet8", "model.subnets=[]", "model.widths=[4,8,8]",
            "train.epochs=2", "optim.lr=0.05", "runtime.progress=false", "method=online", "model.cheap=shift",
            "method.online.students=3"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    nets = res["nets"]
    assert list(nets) == ["student0", "student1", "student2", "teacher"]
    students = ["student0", "student1", "student2"]
    by_val = max(students, key=lambda n: (nets[n]["val_top1"], -students.index(n)))
    assert res["best_student"]["name"] == by_val and res["best_student"]["top1"] == nets[by_val]["top1"]
    assert res["students"]["mean_top1"] == pytest.approx(sum(nets[n]["top1"] for n in students) / 3)
    assert res["teacher_top1"] == nets["teacher"]["top1"]
    assert nets["teacher"]["params"] > 3 * nets["student0"]["params"]
    assert res["standard_net"]["params"] > res["student_net"]["params"] == nets["student0"]["params"]
    assert res["standard_net"]["macs"] > res["student_net"]["macs"] == nets["student0"]["macs"]
    losses = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["losses"]
    assert set(losses) == {"ce.teacher"} | {f"{k}.student{j}" for k in ("ce", "kl") for j in range(3)}
    assert "best student (on val)" in capsys.readouterr().out

    # `ddnn export --run` with no --subnet exports best.pt's best student, equal to the method's own
    assert main(["export", "--run", str(out), "--verify-images", "16"]) == 0
    chosen = res["best_student_of_best_pt"]["name"]
    assert f"exporting {chosen}" in capsys.readouterr().out
    method, ckpt = load_method(out / "best.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        exported = torch.jit.load(str(out / "export" / f"{chosen}.torchscript.pt"))
    pixels = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(ckpt["input"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(ckpt["input"]["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        assert_close(exported(pixels), method.predict((pixels - mean) / std, chosen), rtol=1e-4, atol=1e-4)

    # every net profiles (the teacher as the ensemble of the students' bodies and its head)
    assert main(["profile", "--run", str(out), "--repeats", "1", "--warmup", "0", "--batch-sizes", "1"]) == 0
    assert set(json.loads((out / "profile.json").read_text())["nets"]) == set(nets)


def test_online_refuses_a_ddnn_config_before_writing_anything(tiny_config, tmp_path):
    from ddnn.experiments import train
    from ddnn.errors import DdnnError

    with pytest.raises(DdnnError, match=r"model.subnets=\[\]"):
        train(tiny_config("method=online"), tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()
    with pytest.raises(DdnnError, match="method.online.students"):
        tiny_config("method=online", "model.subnets=[]", "method.online.students=1")
