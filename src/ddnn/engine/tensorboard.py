"""Per-epoch scalars for TensorBoard (`runtime.tensorboard=true`): lr, every loss term, top-1 per net."""

from pathlib import Path

from ddnn.errors import DdnnError


def writer_class():
    """torch's SummaryWriter, or a one-line error naming the extra to install (asked before training)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DdnnError("runtime.tensorboard=true needs the tensorboard package: pip install 'ddnn[tensorboard]'") from None
    return SummaryWriter


class EpochScalars:
    """Writes one epoch's record (as metrics.jsonl holds it) to RUN/tensorboard."""

    def __init__(self, writer_cls, folder: Path) -> None:
        self.writer = writer_cls(str(folder))

    def write(self, record: dict, evaluated: dict[str, float], split: str) -> None:
        step = record["epoch"]
        self.writer.add_scalar("lr", record["lr"], step)
        for k, v in record["losses"].items():
            self.writer.add_scalar(f"loss/{k}", v, step)
        for k, v in record["train_top1"].items():
            self.writer.add_scalar(f"train_top1/{k}", v, step)
        for k, v in evaluated.items():
            self.writer.add_scalar(f"{split}_top1/{k}", v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
