"""Private classifiers (`model.head=private`): one linear layer per sub-net, extraction unchanged."""

import pytest
import torch
import torch.nn.functional as F

from ddnn.cli import main
from ddnn.config import MethodConfig
from ddnn.methods.ekd import EmbeddedKD
from ddnn.models import build_model
from ddnn.models.heads import PrivateLayer


def paper_ekd(model, **options) -> EmbeddedKD:
    """EKD with the paper's values (EKD_PAPER, what EmbeddedKD defaulted to before its config held
    every default) and `options` on top."""
    return EmbeddedKD(model, MethodConfig.named("ekd-paper", **options))


pytestmark = pytest.mark.usefixtures("one_thread")

SUBNETS = ["resnet14", "resnet8"]


def net(head: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("resnet20", num_classes=5, in_channels=3, subnets=SUBNETS, widths=[4, 8, 8], head=head)


def test_private_heads_start_as_the_shared_one_and_extract_to_the_same_size():
    shared, private = net("shared").eval(), net("private").eval()
    assert isinstance(private.head[2], PrivateLayer) and set(private.head[2].layers) == {"resnet20", *SUBNETS}
    x = torch.randn(4, 3, 16, 16)
    for name in ["resnet20", *SUBNETS]:
        torch.testing.assert_close(private(x, name), shared(x, name))  # copies of one initial layer
        extracted = private.extract(name).eval()
        torch.testing.assert_close(extracted(x), private(x, name))
        assert sum(p.numel() for p in extracted.parameters()) == sum(p.numel() for p in shared.extract(name).parameters())
    extra = sum(p.numel() for p in private.parameters()) - sum(p.numel() for p in shared.parameters())
    assert extra == 2 * (8 * 5 + 5)  # two more copies of an 8 -> 5 linear layer


def test_each_net_trains_only_its_own_classifier():
    method = paper_ekd(net("private"), alpha=0.0, beta=0.0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 16, 16, generator=gen), torch.randint(0, 5, (6,), generator=gen)
    losses, logits = method.forward_train(x, y)
    losses["ce.resnet8"].backward()
    heads = method.model.head[2].layers
    assert heads["resnet8"].weight.grad.abs().sum() > 0
    assert heads["resnet20"].weight.grad is None and heads["resnet14"].weight.grad is None
    # the head's gradient is the one of a plain linear layer on the pooled features
    feats = method.model(x, "resnet8", features=True).stages[-1].mean((2, 3))
    expected = torch.autograd.grad(F.cross_entropy(F.linear(feats, heads["resnet8"].weight, heads["resnet8"].bias), y),
                                   heads["resnet8"].weight)[0]
    torch.testing.assert_close(heads["resnet8"].weight.grad, expected)


def test_one_net_keeps_a_plain_head():
    torch.manual_seed(0)
    alone = build_model("resnet8", num_classes=5, in_channels=3, widths=[4, 8, 8], head="private")
    assert isinstance(alone.head[2], torch.nn.Linear)


def test_private_head_run_trains_and_evaluates(tmp_path, tiny_config, capsys):
    from ddnn.experiments import train

    results = train(tiny_config("model.head=private"), tmp_path / "run", log=lambda *_: None)
    assert set(results["nets"]) == {"resnet14", "resnet8"}
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run"), "--which", "last"]) == 0
    shown = capsys.readouterr().out  # the checkpoint reloads into private heads and gives the same top-1
    for name, entry in results["nets"].items():
        assert f"{entry['top1']:.2f}" in shown
