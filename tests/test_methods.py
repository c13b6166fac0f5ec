"""The training methods: EKD's loss terms against a direct computation, what the detached teacher
receives, the `mean` reduction, and that `individual` trains independent nets."""

import pytest
import torch
import torch.nn.functional as F

from ddnn.config import MethodConfig
from ddnn.losses import attention_distance, kl_distill
from ddnn.methods.ekd import EmbeddedKD
from ddnn.methods.individual import Individual
from ddnn.models import build_model
from ddnn.models.dynamic import SubNet


def paper_ekd(model, **options) -> EmbeddedKD:
    """EKD with the paper's values (EKD_PAPER, what EmbeddedKD defaulted to before its config held
    every default) and `options` on top."""
    return EmbeddedKD(model, MethodConfig.named("ekd-paper", **options))


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_ddnn(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("resnet14", num_classes=5, in_channels=3, subnets=["resnet8"], widths=[4, 8, 8])


def batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 12, 12, generator=gen), torch.randint(0, 5, (6,), generator=gen)


def test_ekd_terms_equal_a_direct_computation():
    x, y = batch()
    method = paper_ekd(tiny_ddnn(), alpha=0.7, beta=2.0, temperature=3.0, attention="zsum")
    losses, logits = method.forward_train(x, y)
    assert set(losses) == {"ce.resnet14", "ce.resnet8", "kl.resnet8", "att.resnet8"}

    ref = tiny_ddnn()  # same seed: same weights; train mode uses batch statistics, so outputs match
    full, sub = ref(x, "resnet14", features=True), ref(x, "resnet8", features=True)
    torch.testing.assert_close(logits["resnet14"], full.logits)
    torch.testing.assert_close(losses["ce.resnet14"], F.cross_entropy(full.logits, y))
    torch.testing.assert_close(losses["ce.resnet8"], F.cross_entropy(sub.logits, y))
    torch.testing.assert_close(losses["kl.resnet8"], 0.7 * kl_distill(full.logits, sub.logits, 3.0))
    att = sum(attention_distance(s, t, "zsum") for s, t in zip(sub.stages, full.stages))
    torch.testing.assert_close(losses["att.resnet8"], 2.0 * att)
    assert losses["kl.resnet8"] > 0 and losses["att.resnet8"] > 0


def test_attention_on_chosen_stages_only():
    x, y = batch()
    last = paper_ekd(tiny_ddnn(), alpha=0, beta=1.0, stages=[2]).forward_train(x, y)[0]["att.resnet8"]
    ref = tiny_ddnn()
    full, sub = ref(x, "resnet14", features=True), ref(x, "resnet8", features=True)
    torch.testing.assert_close(last, attention_distance(sub.stages[2], full.stages[2]))


def _grads_of_distillation(detach: bool) -> dict[str, torch.Tensor]:
    """Gradients of the KL + attention terms alone, by parameter name."""
    x, y = batch()
    method = paper_ekd(tiny_ddnn(), alpha=1.0, beta=1.0, detach_teacher=detach)
    losses, _ = method.forward_train(x, y)
    (losses["kl.resnet8"] + losses["att.resnet8"]).backward()
    return {n: p.grad for n, p in method.named_parameters()}


def test_detached_teacher_learns_only_from_labels():
    # the second block of each stage runs only in the full net (resnet14 = 2-2-2, resnet8 = 1-1-1)
    detached = _grads_of_distillation(detach=True)
    full_only = [n for n in detached if ".1.body." in n and "stages" in n]
    assert full_only
    assert all(detached[n] is None or detached[n].abs().max() == 0 for n in full_only)
    # the sub-net's own path (shared stem conv) does get the distillation gradient
    assert detached["model.stem.0.weight"].abs().max() > 0

    attached = _grads_of_distillation(detach=False)
    assert any(attached[n] is not None and attached[n].abs().max() > 0 for n in full_only)


def test_mean_reduction_divides_every_term_by_the_number_of_nets():
    x, y = batch()
    summed, _ = paper_ekd(tiny_ddnn(), reduce="sum").forward_train(x, y)
    mean, _ = paper_ekd(tiny_ddnn(), reduce="mean").forward_train(x, y)
    assert summed.keys() == mean.keys()
    for key in summed:
        torch.testing.assert_close(mean[key], summed[key] / 2)


def test_ddnn_is_ekd_without_distillation():
    x, y = batch()
    losses, _ = paper_ekd(tiny_ddnn(), alpha=0.0, beta=0.0).forward_train(x, y)
    assert set(losses) == {"ce.resnet14", "ce.resnet8"}


def test_individual_nets_share_nothing_and_train_independently():
    torch.manual_seed(0)
    nets = {
        "resnet14": build_model("resnet14", num_classes=5, in_channels=3, widths=[4, 8, 8]),
        "resnet8": build_model("resnet8", num_classes=5, in_channels=3, widths=[4, 8, 8]),
    }
    method = Individual(nets)
    assert method.nets() == {"resnet14": SubNet("resnet14", (2, 2, 2)), "resnet8": SubNet("resnet8", (1, 1, 1))}
    x, y = batch()
    losses, logits = method.forward_train(x, y)
    assert set(losses) == {"ce.resnet14", "ce.resnet8"}
    # the deep net's loss gives the shallow net no gradient: summing the losses is training each alone
    losses["ce.resnet14"].backward()
    assert all(p.grad is None for p in method.models["resnet8"].parameters())
    assert any(p.grad is not None for p in method.models["resnet14"].parameters())


def test_balanced_reduction_divides_each_gradient_by_the_nets_that_use_it():
    """resnet14 holding resnet8 (blocks [2,2,2] and [1,1,1]): the stem, the first block of each stage and
    the head run in both nets (gradient / 2); the second blocks and each net's private BN in one (/ 1)."""
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 5, (6,))
    grads = {}
    for reduce in ("sum", "balanced"):
        method = paper_ekd(tiny_ddnn(), alpha=1.0, beta=1.0, reduce=reduce)
        losses, _ = method.forward_train(x, y)
        sum(losses.values()).backward()
        grads[reduce] = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    shared = [k for k in grads["sum"] if k.startswith(("model.stem.0.", "model.stages.0.0.body.0.", "model.head."))]
    alone = [k for k in grads["sum"] if k.startswith("model.stages.2.1.body.0.")]
    assert shared and alone
    for k in shared:
        torch.testing.assert_close(grads["balanced"][k], grads["sum"][k] / 2)
    for k in alone:
        torch.testing.assert_close(grads["balanced"][k], grads["sum"][k])
    private_bn = [k for k in grads["sum"] if ".norms." in k]
    assert private_bn and all(torch.equal(grads["balanced"][k], grads["sum"][k]) for k in private_bn)


def test_sub_ce_weight_scales_or_drops_the_sub_nets_cross_entropy():
    torch.manual_seed(0)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 5, (6,))
    model = tiny_ddnn()
    full, _ = paper_ekd(model, sub_ce=1.0).forward_train(x, y)
    half, _ = paper_ekd(model, sub_ce=0.5).forward_train(x, y)
    none, _ = paper_ekd(model, sub_ce=0.0).forward_train(x, y)
    torch.testing.assert_close(half["ce.resnet8"], 0.5 * full["ce.resnet8"])
    torch.testing.assert_close(half["ce.resnet14"], full["ce.resnet14"])  # the full net keeps its CE
    assert "ce.resnet8" not in none and set(none) == {"ce.resnet14", "kl.resnet8", "att.resnet8"}


def test_ekd_takes_every_option_from_its_config_and_ddnn_drops_the_distillation():
    """One home for EKD's defaults: the config's method section (ddnn's recipe, or the ekd-paper
    preset); the method has none of its own, and `ddnn` is the same config with CE only."""
    import inspect

    from ddnn.config import load_config
    from ddnn.data import InputSpec
    from ddnn.engine.setup import build_method

    params = inspect.signature(EmbeddedKD.__init__).parameters
    assert list(params) == ["self", "model", "cfg"] and all(p.default is p.empty for p in params.values())
    spec = InputSpec(4, (3, 16, 16), (0.5,) * 3, (0.25,) * 3)
    tiny = ["model.name=resnet14", "model.subnets=[resnet8]", "model.widths=[4,8,8]"]
    ours = build_method(load_config(None, tiny), spec)
    paper = build_method(load_config(None, [*tiny, "method=ekd-paper"]), spec)
    assert (ours.alpha, ours.beta, ours.temperature) == (1.0, 0.0, 1.0)
    assert (paper.alpha, paper.beta, paper.temperature, paper.stages) == (1.0, 1.0, 3.0, [0, 1, 2])
    ddnn = build_method(load_config(None, [*tiny, "method=ddnn", "method.sub_ce=0.3", "method.reduce=mean",
                                           "method.ensemble=0.5"]), spec)
    assert (ddnn.alpha, ddnn.beta, ddnn.ensemble, ddnn.sub_ce, ddnn.scale) == (0.0, 0.0, 0.0, 1.0, 0.5)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
    assert set(ddnn.forward_train(x, y)[0]) == {"ce.resnet14", "ce.resnet8"}
