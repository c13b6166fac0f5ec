"""EKD's recipe options (issue 8): distillation warm-up, ensemble back-distillation, sandwich
sampling of sub-nets, per-net weight decay of shared weights, and the trainer's `progress`."""

import math

import pytest
import torch
import torch.nn.functional as F

from ddnn.config import MethodConfig
from ddnn.engine.trainer import Trainer
from ddnn.losses import kl_distill
from ddnn.methods.ekd import EmbeddedKD, ensemble_logits
from ddnn.models import build_model


def paper_ekd(model, **options) -> EmbeddedKD:
    """EKD with the paper's values (EKD_PAPER, what EmbeddedKD defaulted to before its config held
    every default) and `options` on top."""
    return EmbeddedKD(model, MethodConfig.named("ekd-paper", **options))


pytestmark = pytest.mark.usefixtures("one_thread")


def ddnn(subnets=("resnet8",), seed: int = 0):
    torch.manual_seed(seed)
    return build_model("resnet20", num_classes=5, in_channels=3, subnets=list(subnets), widths=[4, 8, 8])


def batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 12, 12, generator=gen), torch.randint(0, 5, (6,), generator=gen)


def test_distill_warmup_ramps_kl_and_attention_linearly_from_zero():
    x, y = batch()
    method = paper_ekd(ddnn(), alpha=1.0, beta=1.0, temperature=2.0, distill_warmup=2.0)
    reference = paper_ekd(ddnn(), alpha=1.0, beta=1.0, temperature=2.0)
    full_terms, _ = reference.forward_train(x, y)
    for progress, factor in [(0.0, 0.0), (0.5, 0.25), (1.0, 0.5), (2.0, 1.0), (7.3, 1.0)]:
        method.progress = progress
        losses, _ = method.forward_train(x, y)
        for term in ("kl.resnet8", "att.resnet8"):
            torch.testing.assert_close(losses[term], factor * full_terms[term])
        torch.testing.assert_close(losses["ce.resnet8"], full_terms["ce.resnet8"])  # labels are never ramped


def test_ensemble_logits_give_the_mean_posterior_at_the_temperature():
    a = torch.tensor([[2.0, 0.0, -1.0]])
    b = torch.tensor([[0.0, 1.0, 0.5]])
    for t in (1.0, 3.0):
        mean = (F.softmax(a / t, 1) + F.softmax(b / t, 1)) / 2
        torch.testing.assert_close(F.softmax(ensemble_logits([a, b], t) / t, 1), mean)
    # by hand at T = 1: softmax([2,0,-1]) = [.8438, .1142, .0420], softmax([0,1,.5]) = [.1863, .5065, .3072]
    expected = torch.tensor([[0.51506, 0.31035, 0.17459]])
    torch.testing.assert_close(F.softmax(ensemble_logits([a, b], 1.0), 1), expected, atol=1e-4, rtol=0)


def test_ensemble_term_teaches_only_the_full_net_from_the_detached_mean_posterior():
    x, y = batch()
    method = paper_ekd(ddnn(subnets=("resnet14", "resnet8")), alpha=0.0, beta=0.0, temperature=2.0, ensemble=0.5)
    losses, logits = method.forward_train(x, y)
    assert set(losses) == {"ce.resnet20", "ce.resnet14", "ce.resnet8", "ens.resnet20"}
    teacher = ensemble_logits([z.detach() for z in logits.values()], 2.0)
    torch.testing.assert_close(losses["ens.resnet20"], 0.5 * kl_distill(teacher, logits["resnet20"], 2.0))
    # its gradient reaches the full net's own blocks but none of the sub-nets' private BN
    losses["ens.resnet20"].backward()
    grads = {n: p.grad for n, p in method.named_parameters()}
    assert grads["model.stages.0.2.body.1.norms.resnet20.weight"].abs().sum() > 0
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if "norms.resnet8" in n)


def test_sandwich_runs_the_full_net_the_smallest_and_one_other_per_step():
    x, y = batch()
    method = paper_ekd(ddnn(subnets=("resnet14", "resnet8", [1, 2, 1])), alpha=1.0, beta=0.0, sample="sandwich")
    torch.manual_seed(0)
    seen = []
    for _ in range(40):
        _, logits = method.forward_train(x, y)
        names = list(logits)
        assert len(names) == 3 and names[0] == "resnet20" and names[-1] == "d1-2-1"  # the last configured one
        seen.append(names[1])
    assert set(seen) == {"resnet14", "resnet8"}
    # with two sub-nets or fewer there is nothing to sample
    small = paper_ekd(ddnn(subnets=("resnet14", "resnet8")), sample="sandwich")
    assert list(small.forward_train(x, y)[1]) == ["resnet20", "resnet14", "resnet8"]


def test_per_net_decay_multiplies_weight_decay_by_the_nets_running_each_weight():
    model = ddnn(subnets=("resnet14", "resnet8"))
    method = paper_ekd(model, shared_decay="per_net")
    decay = {id(p): g["weight_decay"] for g in method.parameter_groups(1e-4) for p in g["params"]}
    assert len(decay) == len(list(method.parameters()))
    assert decay[id(model.stem[0].weight)] == pytest.approx(3e-4)  # stem: all three nets
    assert decay[id(model.head[2].weight)] == pytest.approx(3e-4)
    assert decay[id(model.stages[0][1].body[0].weight)] == pytest.approx(2e-4)  # block 2: resnet20 and resnet14
    assert decay[id(model.stages[0][2].body[0].weight)] == pytest.approx(1e-4)  # block 3: the full net alone
    assert decay[id(model.stages[0][0].body[1].norms["resnet8"].weight)] == pytest.approx(1e-4)  # private BN
    # the default keeps one group with the configured decay
    assert [g["weight_decay"] for g in paper_ekd(ddnn()).parameter_groups(1e-4)] == [1e-4]
    # behaviour: with no gradient, one SGD step shrinks a weight by lr * decay
    opt = torch.optim.SGD(method.parameter_groups(0.1), lr=0.5)
    stem_before, last_before = model.stem[0].weight.clone(), model.stages[0][2].body[0].weight.clone()
    for p in method.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(model.stem[0].weight, stem_before * (1 - 0.5 * 0.3))
    torch.testing.assert_close(model.stages[0][2].body[0].weight, last_before * (1 - 0.5 * 0.1))


def test_trainer_tells_the_method_how_far_training_is(tiny_config, tmp_path):
    cfg = tiny_config("train.epochs=2")
    trainer = Trainer(cfg, tmp_path / "run", log=lambda *_: None)
    seen = []
    inner = trainer.method.forward_train

    def record(x, y):
        seen.append(trainer.method.progress)
        return inner(x, y)

    trainer.method.forward_train = record
    trainer.fit()
    steps = trainer.steps_per_epoch
    assert seen == pytest.approx([e + s / steps for e in range(2) for s in range(steps)])


def test_sandwich_run_reports_train_top1_over_the_steps_each_net_ran(tiny_config, tmp_path):
    cfg = tiny_config("model.name=resnet20", "model.subnets=[resnet14,resnet8,[1,2,1]]", "method.sample=sandwich",
                      "train.epochs=1")
    trainer = Trainer(cfg, tmp_path / "run", log=lambda *_: None)
    runs = {name: 0 for name in trainer.method.nets()}
    inner = trainer.method.forward_train

    def count(x, y):
        losses, logits = inner(x, y)
        for name in logits:
            runs[name] += len(y)
        return losses, logits

    trainer.method.forward_train = count
    trainer.fit()
    record = trainer.history[0]
    assert runs["resnet20"] == runs["d1-2-1"] == len(trainer.data.train)
    assert 0 < runs["resnet14"] < len(trainer.data.train) and runs["resnet14"] + runs["resnet8"] == runs["resnet20"]
    for name, top1 in record["train_top1"].items():  # a fraction of that net's own samples
        correct = top1 / 100 * runs[name]
        assert math.isclose(correct, round(correct), abs_tol=1e-6)


def test_ensemble_teacher_is_the_sub_nets_kl_target():
    x, y = batch()
    method = paper_ekd(ddnn(subnets=("resnet14", "resnet8")), alpha=0.5, beta=0.0, temperature=2.0,
                        teacher="ensemble")
    losses, logits = method.forward_train(x, y)
    assert set(losses) == {"ce.resnet20", "ce.resnet14", "ce.resnet8", "kl.resnet14", "kl.resnet8"}
    mean = ensemble_logits([z.detach() for z in logits.values()], 2.0)
    for name in ("resnet14", "resnet8"):
        torch.testing.assert_close(losses[f"kl.{name}"], 0.5 * kl_distill(mean, logits[name], 2.0))
    # the target is detached: the KL terms' gradient on the full net's own last block is zero
    (losses["kl.resnet14"] + losses["kl.resnet8"]).backward()
    own = method.model.stages[0][2].body[0].weight.grad
    assert own is None or own.abs().sum() == 0
