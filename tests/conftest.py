import pytest
import torch

from ddnn.config import Config, load_config


# a config that trains in seconds: synthetic 16x16 data, ResNet-14 DDNN holding ResNet-8 (later overrides win)
TINY = ["name=tiny", "data.name=synthetic", "data.synthetic.size=160", "data.synthetic.image_size=16",
        "data.synthetic.channels=3", "data.synthetic.classes=4", "data.batch_size=32", "data.eval_batch_size=64",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "model.name=resnet14", "model.subnets=[resnet8]",
        "model.widths=[4,8,8]", "train.epochs=2", "optim.lr=0.05", "schedule.warmup_epochs=0", "runtime.progress=false"]


@pytest.fixture(scope="session")
def tiny_config():
    """TINY with the caller's overrides laid on top, as a Config (usable from module-scoped fixtures)."""

    def make(*overrides: str) -> Config:
        return load_config(None, [*TINY, *overrides])

    return make


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: small tensors run faster without OpenMP hand-offs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
