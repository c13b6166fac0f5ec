"""`ddnn export`: one net as a standalone file (TorchScript or ONNX), verified right after writing.

The file holds the extracted plain module behind the run's input normalisation, so it takes float
images in [0, 1], NCHW, and needs only torch (TorchScript) or an ONNX runtime to run. It is read
back and run on real images; its logits must match the DDNN's own (max abs difference <= 1e-4) or
nothing is written and the command fails.
"""

import hashlib
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ddnn.deploy.provenance import checkpoint_identity
from ddnn.deploy.run import TrainedRun
from ddnn.errors import DdnnError
from ddnn.files import write_bytes, write_text

TOLERANCE = 1e-4
SUFFIX = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}


class Normalized(nn.Module):
    """(x - mean) / std per channel, then the net: the file takes plain [0, 1] pixels."""

    def __init__(self, net: nn.Module, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def input_contract(spec) -> dict:
    """What an exported file takes, as its `.json` records it."""
    return {"shape": ["batch", *spec.shape], "dtype": "float32", "range": [0.0, 1.0], "normalization": "included",
            "mean": list(spec.mean), "std": list(spec.std)}


def require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise DdnnError("ONNX export needs the `export` extra: pip install 'ddnn[export]' "
                        "(onnx + onnxruntime), or use --format torchscript") from None
    return onnxruntime


def _serialize(model: nn.Module, example: torch.Tensor, fmt: str) -> bytes:
    """The file's bytes, made in memory: only ddnn's own writer touches the disk (files.write_bytes)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / exporter deprecation chatter
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(model, example), buffer)
        else:
            # the TorchScript-based exporter: no onnxscript needed, dynamic batch axis
            torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17)
    return buffer.getvalue()


def _run_file(fmt: str, data: bytes, images: torch.Tensor) -> torch.Tensor:
    """Logits of the file's bytes on `images`, through the runtime a deployment would use."""
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            return torch.jit.load(io.BytesIO(data), map_location="cpu")(images)
    ort = require_onnx()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": images.numpy()})[0])


@torch.no_grad()
def export_net(run: TrainedRun, name: str, fmt: str, path: Path, images: torch.Tensor) -> dict:
    """Write net `name` of `run` to `path` and verify it on `images` (uint8 NCHW from the data).

    Returns the export's description (also written beside the file as JSON).
    """
    if fmt == "onnx":
        require_onnx()
    run.check_net(name)
    method = run.method.float().cpu().eval()
    model = Normalized(method.extract(name).eval(), run.spec.mean, run.spec.std).eval()
    pixels = images.float() / 255.0
    normalize = Normalized(nn.Identity(), run.spec.mean, run.spec.std)
    reference = method.predict(normalize(pixels), name)
    # made and checked in memory, then written whole: a failed export never replaces a good file
    data = _serialize(model, pixels[:2], fmt)
    try:
        produced = _run_file(fmt, data, pixels)
    except Exception as err:  # a file its own runtime cannot run is not an export
        raise DdnnError(f"the exported '{name}' could not be run back ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:160]}); nothing written") from None
    diff = (produced.float() - reference).abs().max().item()
    if not diff <= TOLERANCE:
        raise DdnnError(f"export of '{name}' failed verification: its outputs differ from the DDNN's by "
                        f"{diff:.2e} (> {TOLERANCE:g}) on {len(images)} images; nothing written")
    write_bytes(path, data)
    sub = run.method.nets()[name]
    info = {
        "net": name, "blocks": list(sub.blocks), "format": fmt, "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "input": input_contract(run.spec),
        "output": {"logits": run.spec.num_classes},
        "verified": {"images": len(images), "max_abs_diff": diff, "tolerance": TOLERANCE},
        "source": {"checkpoint": str(run.checkpoint), "epoch": run.ckpt["epoch"],
                   **checkpoint_identity(run),
                   "calibrated_bn": name in run.ckpt.get("calibration", {}).get("nets", {})},
    }
    write_text(Path(str(path) + ".json"), json.dumps(info, indent=2) + "\n")
    return info
