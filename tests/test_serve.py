"""`ddnn serve` as a user meets it: a real server process on a free loopback port, a real HTTP client.

The switchable file comes from a DDNN trained for one epoch on synthetic 1x40x40 images; its metadata
ranks the full net as the most accurate depth (made-up top-1 given to the export), so the tests know
which depth an idle latency-target server runs.
"""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")

from ddnn.cli import main  # noqa: E402
from ddnn.data import Normalizer  # noqa: E402
from ddnn.deploy.run import open_run  # noqa: E402
from ddnn.deploy.switchable import export_switchable  # noqa: E402
from ddnn.experiments import train  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TorchScript is deprecated in torch 2.13
NAMES = ["resnet14", "resnet8"]
ACCURACY = {"resnet14": {"top1": 90.0, "val_top1": 90.0}, "resnet8": {"top1": 80.0, "val_top1": 80.0}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    """(run folder, switchable ONNX file, test images uint8 NCHW, the DDNN's logits per depth on them)."""
    out = tmp_path_factory.mktemp("serve") / "run"
    train(tiny_config("data.synthetic.image_size=40", "data.synthetic.channels=1", "model.widths=[8,16,16]",
                      "train.epochs=1", "runtime.threads=1"), out, log=lambda *_: None)
    run = open_run(out)
    images = run.load_data().test.images[:16]
    path = out / "export" / "resnet14-switchable.onnx"
    export_switchable(run, "onnx", path, images, ACCURACY)
    x = Normalizer(run.spec.mean, run.spec.std)(images)
    with torch.no_grad():
        logits = {name: run.method.predict(x, name).numpy() for name in NAMES}
    return out, path, images.numpy(), logits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m ddnn serve FILE --port P ...` in its own process, up once /health answers."""

    def __init__(self, source, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "ddnn", "serve", str(source), "--port", str(self.port),
                                      "--threads", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "server did not come up in 60 s"
            time.sleep(0.1)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> str:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return out


@pytest.fixture(scope="module")
def server(trained):
    s = Server(trained[1], "--max-body-kib", "256", "--max-batch", "4", "--max-images", "4")
    yield s
    s.stop()


def png(pixels: np.ndarray) -> bytes:
    """(C, H, W) uint8 -> PNG bytes (grayscale for one channel)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("depth", [0, 1])
def test_predictions_equal_the_ddnns_at_each_depth(server, trained, depth):
    _, _, images, logits = trained
    expected = softmax(logits[NAMES[depth]])
    for i in range(8):  # PNG bytes, one image a request, the depth by index
        r = server.client.post(f"/predict?depth={depth}", content=png(images[i]), headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["depth"] == {"index": depth, "name": NAMES[depth]}
        assert body["predictions"][0]["class"] == int(expected[i].argmax())
        np.testing.assert_allclose(body["predictions"][0]["probabilities"], expected[i], atol=1e-4)
        assert body["ms"]["total"] >= body["ms"]["inference"] > 0
    # the JSON form: a batch of (H, W) float images in [0, 1], the depth by name
    batch = (images[8:12, 0] / 255.0).tolist()
    r = server.client.post(f"/predict?depth={NAMES[depth]}", json={"images": batch})
    assert r.status_code == 200, r.text
    got = np.array([p["probabilities"] for p in r.json()["predictions"]])
    np.testing.assert_allclose(got, expected[8:12], atol=1e-4)
    assert r.json()["batch"] >= 4


def bad_requests(images):
    from PIL import Image

    rgb = io.BytesIO()
    Image.new("RGB", (40, 40)).save(rgb, format="PNG")
    return {
        "not an image": ("", {"content": b"hello, not a picture", "headers": {"content-type": "image/png"}}, 400),
        "wrong size": ("", {"content": png(images[0][:, :20, :20]), "headers": {"content-type": "image/png"}}, 422),
        "wrong channels": ("", {"content": rgb.getvalue(), "headers": {"content-type": "image/png"}}, 422),
        "body too large": ("", {"content": b"\0" * (300 * 1024), "headers": {"content-type": "image/png"}}, 413),
        "unknown depth index": ("?depth=7", {"content": png(images[0]), "headers": {"content-type": "image/png"}}, 400),
        "unknown depth name": ("?depth=resnet99", {"content": png(images[0]), "headers": {"content-type": "image/png"}}, 400),
        "not JSON": ("", {"content": b"{oops", "headers": {"content-type": "application/json"}}, 400),
        "JSON of the wrong shape": ("", {"json": {"image": [[0.5] * 5] * 5}}, 422),
        "pixels out of range": ("", {"json": {"image": (images[0] * 1.0).tolist()}}, 422),
        "too many images": ("", {"json": {"images": [(images[0] / 255.0).tolist()] * 5}}, 413),
        "another content type": ("", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
    }


def test_bad_requests_get_a_4xx_with_one_line_and_the_server_keeps_serving(server, trained):
    images = trained[2]
    for what, (query, kwargs, status) in bad_requests(images).items():
        r = server.client.post("/predict" + query, **kwargs)
        assert r.status_code == status, (what, r.status_code, r.text)
        reason = r.json()["error"]
        assert reason and "\n" not in reason, what
        ok = server.client.post("/predict", content=png(images[1]), headers={"content-type": "image/png"})
        assert ok.status_code == 200, (what, ok.text)
    assert "its depths: 0=resnet14, 1=resnet8" in server.client.post(
        "/predict?depth=7", content=png(images[0]), headers={"content-type": "image/png"}).json()["error"]
    metrics = server.client.get("/metrics").text
    assert 'ddnn_rejected_requests_total{reason="unknown_depth"} 3.0' in metrics
    assert 'ddnn_rejected_requests_total{reason="wrong_shape"} 3.0' in metrics
    assert 'ddnn_requests_total{code="413"} 2.0' in metrics


def test_health_and_metrics_describe_the_model_and_the_traffic(server, trained):
    health = server.client.get("/health").json()
    assert health["status"] == "ok" and health["input"]["shape"] == [1, 40, 40]
    assert [d["name"] for d in health["depths"]] == NAMES
    assert health["policy"] == "fixed depth 0 (resnet14)"  # the most accurate by the file's validation top-1
    server.client.post("/predict", content=png(trained[2][0]), headers={"content-type": "image/png"})
    text = server.client.get("/metrics").text
    assert 'ddnn_images_total{depth="resnet14"}' in text
    assert "ddnn_request_latency_seconds_bucket" in text and "ddnn_batch_images_bucket" in text
    assert text.count("# TYPE ddnn_") >= 7


def raw_request(port: int, body: bytes, query: str = "") -> tuple[socket.socket, bytes]:
    """A socket with a predict request's headers sent; the body is the caller's to send."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = (f"POST /predict{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    s.sendall(head)
    return s, body


def response_of(s: socket.socket) -> tuple[int, dict]:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_latency_target_runs_shallower_while_requests_queue(trained):
    from ddnn import runtime

    _, path, images, _ = trained
    model = runtime.load(path, threads=1, batch_sizes=(1, 2))
    full_ms = model.expected_ms(0, 1)
    # an idle request at full depth is expected to take full_ms (+ reading, decoding, answering): well
    # within 0.8 * target; a queue of a dozen images or more behind a batch is not, at full depth
    target = 10 * full_ms + 3.0
    s = Server(path, "--p99-ms", f"{target:.3f}", "--max-batch", "2")
    try:
        s.client.post("/predict?depth=1", content=png(images[0]), headers={"content-type": "image/png"})  # warm-up
        # idle: the full depth; a few tries, since on a loaded machine one request can wait for the CPU
        for _ in range(5):
            idle = s.client.post("/predict", content=png(images[0]), headers={"content-type": "image/png"}).json()
            if idle["depth"]["name"] == "resnet14":
                break
            time.sleep(0.2)
        assert idle["depth"]["name"] == "resnet14", idle
        # 48 requests whose bodies are held back, then completed together: they reach the queue at once
        pending = [raw_request(s.port, png(images[i % len(images)])) for i in range(48)]
        for sock, body in pending:
            sock.sendall(body[:-1])
        time.sleep(0.3)
        for sock, body in pending:
            sock.sendall(body[-1:])
        answers = [response_of(sock) for sock, _ in pending]
        assert all(code == 200 for code, _ in answers), answers
        used = [a["depth"]["name"] for _, a in answers]
        assert "resnet8" in used, used
        assert max(a["batch"] for _, a in answers) == 2
        assert 'ddnn_images_total{depth="resnet8"}' in s.client.get("/metrics").text
    finally:
        s.stop()


def test_sigterm_finishes_the_request_in_flight_then_exits_cleanly(trained):
    _, path, images, logits = trained
    s = Server(path)
    sock, body = raw_request(s.port, png(images[3]), "?depth=1")
    sock.sendall(body[: len(body) // 2])  # the request is in flight: headers read, body half sent
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # no new connections once shutting down
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
    assert s.proc.poll() is None  # still waiting for our request
    sock.sendall(body[len(body) // 2:])
    code, answer = response_of(sock)
    assert code == 200 and answer["predictions"][0]["class"] == int(logits["resnet8"][3].argmax())
    # uvicorn stops by the signal it caught once it has drained (0 before uvicorn 0.29): a clean stop to systemd
    assert s.proc.wait(timeout=20) in (0, -signal.SIGTERM)
    out = s.stop()
    assert "Application shutdown complete" in out and "Finished server process" in out


def test_serve_refuses_bad_arguments_in_one_line(trained, tmp_path, capsys):
    run_dir, path, _, _ = trained
    assert main(["serve", str(tmp_path / "missing.onnx")]) == 2
    assert main(["serve", str(path), "--depth", "resnet99"]) == 2
    assert main(["serve", str(path), "--p99-ms", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("ddnn: error: ") for line in err)
    assert "missing.onnx does not exist" in err[0] and "no depth 'resnet99'" in err[1] and "positive" in err[2]
