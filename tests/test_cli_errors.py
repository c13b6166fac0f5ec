"""The real CLI in a subprocess: bad input ends in exactly one `ddnn: error:` line on stderr and exit
code 2, never a traceback; tampered checkpoints never run code; an existing run folder is never touched.

Every case fails before training starts, so each run costs about one interpreter start-up (importing torch).
All cases are launched together, a few at a time, by one module fixture. The finer points of config errors
are covered in-process by test_config.py.
"""

import os
import pickle
import random
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest


class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def marker_of(folder: Path) -> Path:
    return folder / "PWNED"


def write_evil_zip_ckpt(folder: Path) -> None:
    import torch

    payload = {"format": "ddnn-checkpoint/1", "config": {}, "state": Evil(f"echo pwned > {marker_of(folder)}")}
    torch.save(payload, folder / "evil.pt")


def write_evil_legacy_ckpt(folder: Path) -> None:
    with open(folder / "evil.pt", "wb") as fh:
        pickle.dump(Evil(f"echo pwned > {marker_of(folder)}"), fh, protocol=2)


def write_random_bytes(folder: Path) -> None:
    data = bytearray(random.Random(0).randbytes(4096))
    data[0] = 0x84  # not the start of a zip ("PK") archive
    (folder / "corrupt.pt").write_bytes(bytes(data))


def write_truncated_ckpt(folder: Path) -> None:
    import torch

    torch.save({"format": "ddnn-checkpoint/1", "w": torch.zeros(1000)}, folder / "full.pt")
    raw = (folder / "full.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(raw[: len(raw) // 2])


def write_foreign_ckpt(folder: Path) -> None:
    import torch

    torch.save({"weights": torch.zeros(3)}, folder / "foreign.pt")


def write_bad_yaml(folder: Path) -> None:
    (folder / "bad.yaml").write_text("optim:\n  lr: 0.1\n  momentum: [0.9\nmodel:\n  name: resnet20\n")


def write_full_out(folder: Path) -> None:
    (folder / "full").mkdir()
    (folder / "full" / "keep.txt").write_text("precious results\n")


def write_blocking_file(folder: Path) -> None:
    (folder / "blocker").write_text("a file where the run folder's parent should be\n")


def write_flipped_ckpt(folder: Path) -> None:
    import torch

    from ddnn.checkpoint import save_checkpoint

    save_checkpoint({"config": {}, "epoch": 1, "state": {"w": torch.full((16,), 2.0)}}, folder / "flipped.pt")
    raw = bytearray((folder / "flipped.pt").read_bytes())
    raw[raw.find(torch.full((16,), 2.0).numpy().tobytes())] ^= 1
    (folder / "flipped.pt").write_bytes(bytes(raw))


TINY_RUN = ["data.name=synthetic", "data.synthetic.size=80", "data.synthetic.image_size=8", "model.name=resnet8",
            "model.subnets=[]", "model.widths=[4,4,4]", "train.epochs=1", "runtime.progress=false"]


def write_tiny_run(folder: Path) -> None:
    from ddnn.config import load_config
    from ddnn.experiments import train

    train(load_config(None, TINY_RUN), folder / "run", log=lambda *_: None)


@dataclass
class Case:
    argv: list[str]
    words: list[str] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None


ERROR_CASES = {
    "unknown-key": Case(["train", "nosuchkey=1"], ["nosuchkey", "unknown config key"]),
    "misspelt-key": Case(["train", "optim.lrr=0.1"], ["optim.lrr", "did you mean", "lr"]),
    "unknown-model": Case(["train", "model.name=resnet57"], ["resnet57", "model", "resnet56"]),
    "unknown-subnet": Case(["train", "model.subnets=[resnet18]"], ["resnet18", "sub-net"]),
    "subnet-too-deep": Case(["train", "model.subnets=[[10,1,1]]"], ["sub-net", "[10, 1, 1]", "[3, 3, 3]"]),
    "cifar-root-missing": Case(["train", "data.name=cifar10", "data.root=/nonexistent"], ["cifar10", "/nonexistent"]),
    "config-missing": Case(["train", "-c", "missing.yaml"], ["missing.yaml", "not found"]),
    "config-malformed": Case(["train", "-c", "bad.yaml"], ["bad.yaml", "YAML", "line 4"], write_bad_yaml),
    "unknown-method": Case(["train", "method.name=magic"], ["magic", "method", "ekd", "individual"]),
    "out-not-empty": Case(["train", "--out", "full"], ["full", "not empty"], write_full_out),
    "eval-run-missing": Case(["eval", "--run", "/nonexistent"], ["/nonexistent", "does not exist"]),
    "eval-run-empty": Case(["eval", "--run", "."], ["best.pt", "does not exist"]),
    "eval-neither": Case(["eval"], ["--run", "--ckpt"]),
    "eval-ckpt-corrupt": Case(["eval", "--ckpt", "corrupt.pt"], ["corrupt.pt", "checkpoint"], write_random_bytes),
    "eval-ckpt-truncated": Case(["eval", "--ckpt", "truncated.pt"], ["truncated.pt", "corrupt"], write_truncated_ckpt),
    "eval-ckpt-foreign": Case(["eval", "--ckpt", "foreign.pt"], ["foreign.pt", "not a ddnn checkpoint"], write_foreign_ckpt),
    "eval-ckpt-malicious": Case(["eval", "--ckpt", "evil.pt"], ["evil.pt", "refused"], write_evil_zip_ckpt),
    "eval-ckpt-malicious-legacy": Case(["eval", "--ckpt", "evil.pt"], ["evil.pt", "refused"], write_evil_legacy_ckpt),
    "init-from-missing": Case(["train", "model.name=resnet18", "model.subnets=[resnet10]", "model.init_from=nothere.pth"], ["nothere.pth", "does not exist"]),
    "profile-run-missing": Case(["profile", "--run", "/nonexistent"], ["/nonexistent", "does not exist"]),
    "profile-bad-batch-sizes": Case(["profile", "--batch-sizes", "1,0"], ["--batch-sizes", "positive"]),
    "export-both": Case(["export", "--run", ".", "--subnet", "resnet8", "--all"], ["--subnet", "--all", "not both"]),
    "export-run-empty": Case(["export", "--run", ".", "--all"], ["best.pt", "ddnn train"]),
    "export-switchable-one-net": Case(["export", "--run", ".", "--switchable", "--subnet", "resnet8"],
                                      ["--switchable", "every depth", "leave out --subnet"]),
    "select-no-profile": Case(["select", "--run", ".", "--max-macs", "1e6"], ["profile.json", "ddnn profile --run"]),
    "calibrate-run-missing": Case(["calibrate", "--run", "/nonexistent"], ["/nonexistent", "does not exist"]),
    "report-run-missing": Case(["report", "/nonexistent"], ["/nonexistent"]),
    "wrong-type-number": Case(["train", "optim.lr=fast"], ["optim.lr", "float", "'fast'"]),
    "wrong-type-list": Case(["train", "model.widths=16"], ["model.widths", "list"]),
    "out-of-range": Case(["train", "train.epochs=0"], ["train.epochs", ">= 1"]),
    "override-not-key-value": Case(["train", "optim.lr"], ["optim.lr", "key=value"]),
    "unwritable-out": Case(["train", "--out", "blocker/run", *TINY_RUN], ["blocker/run", "cannot create run folder"],
                           write_blocking_file),
    "bad-flag": Case(["train", "--epochs", "3"], ["unrecognized arguments", "--epochs", "--help"]),
    "bad-choice": Case(["eval", "--run", ".", "--split", "train"], ["--split", "invalid choice", "'train'"]),
    "no-command": Case([], ["required", "command"]),
    "resume-missing": Case(["train", "--resume", "/nonexistent"], ["/nonexistent", "no such run folder"]),
    "resume-auto-no-out": Case(["train", "--resume", "auto"], ["--resume auto", "--out"]),
    "resume-not-a-run": Case(["train", "--resume", "."], ["no last.pt to resume"]),
    "resume-other-config": Case(["train", "--resume", "run", *TINY_RUN, "optim.lr=0.5"],
                                ["cannot resume", "optim.lr=0.1", "0.5 was given"], write_tiny_run),
    "eval-ckpt-checksum": Case(["eval", "--ckpt", "flipped.pt"], ["flipped.pt", "does not match its checksum"],
                               write_flipped_ckpt),
}

OTHER_CASES = {
    "debug": Case(["--debug", "train", "nosuchkey=1"]),
    "list": Case(["list"]),
}

CASES = {**ERROR_CASES, **OTHER_CASES}


@dataclass
class Result:
    cwd: Path
    returncode: int
    stdout: str
    stderr: str


def run_cli(argv: list[str], cwd: Path) -> Result:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",)}
    env["CUDA_VISIBLE_DEVICES"] = ""  # none of these cases needs an accelerator
    proc = subprocess.run([sys.executable, "-m", "ddnn", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)
    return Result(cwd, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    folders = {}
    for name, case in CASES.items():
        folders[name] = tmp_path_factory.mktemp(name)
        if case.setup:
            case.setup(folders[name])
    with ThreadPoolExecutor(max_workers=max(2, min(6, 2 * (os.cpu_count() or 1)))) as pool:
        futures = {name: pool.submit(run_cli, case.argv, folders[name]) for name, case in CASES.items()}
        return {name: f.result() for name, f in futures.items()}


def assert_one_line_error(res: Result, words: list[str]) -> str:
    detail = f"rc={res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert res.returncode == 2, detail
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, detail
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and res.stderr.endswith("\n"), detail
    line = lines[0]
    assert line.startswith("ddnn: error: "), detail
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_error_is_one_line_exit_2(results, name):
    assert_one_line_error(results[name], ERROR_CASES[name].words)


@pytest.mark.parametrize("name", ["unknown-key", "misspelt-key", "unknown-model", "unknown-subnet", "subnet-too-deep",
                                  "config-missing", "config-malformed", "unknown-method", "out-not-empty",
                                  "wrong-type-number", "wrong-type-list", "out-of-range", "bad-flag"])
def test_config_errors_leave_no_run_folder(results, name):
    assert not (results[name].cwd / "runs").exists()


def test_evil_payload_is_live(tmp_path):
    """Control: the payload below really runs its command when unpickled without protection."""
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(f"echo pwned > {control}"), protocol=2))
    assert control.read_text().strip() == "pwned"


@pytest.mark.parametrize("name", ["eval-ckpt-malicious", "eval-ckpt-malicious-legacy"])
def test_malicious_checkpoint_never_runs(results, name):
    res = results[name]
    assert b"system" in (res.cwd / "evil.pt").read_bytes()
    assert res.returncode == 2
    assert not marker_of(res.cwd).exists()
    assert sorted(p.name for p in res.cwd.iterdir()) == ["evil.pt"]


def test_existing_run_folder_untouched(results):
    res = results["out-not-empty"]
    folder = res.cwd / "full"
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    assert (folder / "keep.txt").read_text() == "precious results\n"


def test_random_bytes_checkpoint_reported_as_corrupt(results):
    line = assert_one_line_error(results["eval-ckpt-corrupt"], ["corrupt.pt"])
    assert "corrupt" in line and "more than plain data" not in line


def test_debug_shows_traceback(results):
    res = results["debug"]
    assert res.returncode != 0
    assert "Traceback" in res.stderr
    assert "DdnnError" in res.stderr and "nosuchkey" in res.stderr


def test_list(results):
    res = results["list"]
    assert res.returncode == 0, res.stderr
    words = set(res.stdout.split())
    for name in ("resnet56", "ekd", "individual", "mnist5k", "cifar10", "synthetic", "resnet20"):
        assert name in words, name
    for title in ("models:", "methods:", "datasets:"):
        assert title in res.stdout
    assert "Traceback" not in res.stderr


def test_refused_resume_leaves_the_run_as_it_was(results):
    from ddnn.checkpoint import load_checkpoint

    run = results["resume-other-config"].cwd / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "last.pt", "metrics.jsonl", "results.json"]
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_at_least_twenty_bad_inputs_are_covered():
    assert len(ERROR_CASES) >= 20


# -- every command's file paths: missing, a folder for a file (and the reverse), unreadable, wrong kind --
# In-process (the same `main` the console script runs, no interpreter start-up per case); the cases of
# ERROR_CASES above already cover many missing paths through a real subprocess.

def unreadable(path: Path) -> Path:
    """A file that exists but cannot be read, even by root (a write-only kernel setting)."""
    if os.geteuid() == 0:
        path.symlink_to("/proc/sys/vm/compact_memory")
    else:
        path.write_text("secret\n")
        path.chmod(0)
    try:
        path.read_bytes()
    except OSError:
        return path
    pytest.skip("no unreadable file can be made on this machine")


def folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def run_like(path: Path) -> Path:
    """A folder laid out as a finished run's, each file a placeholder a case then replaces."""
    path.mkdir()
    (path / "results.json").write_text('{"nets": {"resnet8": {"top1": 50.0}}}\n')
    (path / "config.yaml").write_text("model:\n  name: resnet8\n")
    return path


def torchscript_file(path: Path) -> Path:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return path


R18 = ["model.name=resnet18", "model.subnets=[resnet10]", "model.widths=null", "model.stem=imagenet", "data.name=synthetic",
       "data.synthetic.size=40", "data.synthetic.image_size=32", "data.val_fraction=0.25", "data.test_fraction=0.25",
       "runtime.progress=false"]

PATH_CASES = {
    # train
    "train-config-folder": (["train", "-c", "conf"], ["conf", "is a folder"], lambda d: folder(d / "conf")),
    "train-config-unreadable": (["train", "-c", "c.yaml"], ["cannot read config", "c.yaml"],
                                lambda d: unreadable(d / "c.yaml")),
    "train-config-empty": (["train", "-c", "c.yaml"], ["c.yaml", "is empty"], lambda d: (d / "c.yaml").write_text("")),
    "train-config-not-a-mapping": (["train", "-c", "c.yaml"], ["c.yaml", "mapping"],
                                   lambda d: (d / "c.yaml").write_text("- a\n- list\n")),
    "train-out-a-file": (["train", "--out", "taken", *TINY_RUN], ["taken", "is a file"],
                         lambda d: (d / "taken").write_text("x")),
    "train-resume-a-file": (["train", "--resume", "taken"], ["taken", "is a file, not a run folder"],
                            lambda d: (d / "taken").write_text("x")),
    "train-resume-config-unreadable": (["train", "--resume", "r", "runtime.threads=1"], ["cannot read", "config.yaml"],
                                       lambda d: unreadable(folder(d / "r") / "config.yaml")),
    "train-init-from-folder": (["train", *R18, "model.init_from=w"], ["init_from file w", "is a folder"],
                               lambda d: folder(d / "w")),
    "train-init-from-unreadable": (["train", *R18, "model.init_from=w.pth"], ["cannot read init_from file", "w.pth"],
                                   lambda d: unreadable(d / "w.pth")),
    "train-init-from-wrong-kind": (["train", *R18, "model.init_from=w.pth"], ["init_from file w.pth", "corrupt"],
                                   lambda d: (d / "w.pth").write_text("not weights\n")),
    # eval
    "eval-run-a-file": (["eval", "--run", "taken"], ["taken", "is a file, not a run folder"],
                        lambda d: (d / "taken").write_text("x")),
    "eval-best-a-folder": (["eval", "--run", "r"], ["best.pt", "is a folder"], lambda d: folder(run_like(d / "r") / "best.pt")),
    "eval-best-unreadable": (["eval", "--run", "r"], ["cannot read checkpoint", "best.pt"],
                             lambda d: unreadable(run_like(d / "r") / "best.pt")),
    "eval-ckpt-missing": (["eval", "--ckpt", "nothere.pt"], ["nothere.pt", "does not exist"], None),
    "eval-ckpt-folder": (["eval", "--ckpt", "r"], ["checkpoint r", "is a folder"], lambda d: folder(d / "r")),
    "eval-ckpt-unreadable": (["eval", "--ckpt", "c.pt"], ["cannot read checkpoint", "c.pt"],
                             lambda d: unreadable(d / "c.pt")),
    "eval-ckpt-torchscript": (["eval", "--ckpt", "m.pt"], ["m.pt", "TorchScript", "torch.jit.load"],
                              lambda d: torchscript_file(d / "m.pt")),
    "eval-ckpt-onnx": (["eval", "--ckpt", "m.onnx"], ["m.onnx", "ONNX", "onnxruntime"],
                       lambda d: (d / "m.onnx").write_bytes(b"\x08\x07onnx")),
    # profile
    "profile-run-a-file": (["profile", "--run", "taken"], ["taken", "is a file, not a run folder"],
                           lambda d: (d / "taken").write_text("x")),
    "profile-run-empty": (["profile", "--run", "r"], ["has no best.pt"], lambda d: folder(d / "r")),
    "profile-best-unreadable": (["profile", "--run", "r"], ["cannot read checkpoint", "best.pt"],
                                lambda d: unreadable(run_like(d / "r") / "best.pt")),
    "profile-best-wrong-kind": (["profile", "--run", "r"], ["best.pt", "corrupt"],
                                lambda d: (run_like(d / "r") / "best.pt").write_bytes(b"\x00" * 64)),
    "profile-config-folder": (["profile", "-c", "conf"], ["conf", "is a folder"], lambda d: folder(d / "conf")),
    "profile-out-a-file": (["profile", "--out", "taken"], ["--out taken is a file", "give a folder"],
                           lambda d: (d / "taken").write_text("x")),
    # export
    "export-run-missing": (["export", "--run", "nothere", "--all"], ["nothere", "does not exist"], None),
    "export-run-a-file": (["export", "--run", "taken", "--all"], ["taken", "is a file, not a run folder"],
                          lambda d: (d / "taken").write_text("x")),
    "export-best-unreadable": (["export", "--run", "r", "--all"], ["cannot read checkpoint", "best.pt"],
                               lambda d: unreadable(run_like(d / "r") / "best.pt")),
    "export-best-a-folder": (["export", "--run", "r", "--all"], ["best.pt", "is a folder"],
                             lambda d: folder(run_like(d / "r") / "best.pt")),
    "export-best-wrong-kind": (["export", "--run", "r", "--all"], ["best.pt", "TorchScript"],
                               lambda d: torchscript_file(run_like(d / "r") / "best.pt")),
    # select
    "select-run-missing": (["select", "--run", "nothere", "--max-macs", "1M"], ["nothere", "does not exist"], None),
    "select-run-a-file": (["select", "--run", "taken", "--max-macs", "1M"], ["taken", "is a file, not a run folder"],
                          lambda d: (d / "taken").write_text("x")),
    "select-profile-a-folder": (["select", "--run", "r", "--max-macs", "1M"], ["profile.json", "is a folder"],
                                lambda d: folder(run_like(d / "r") / "profile.json")),
    "select-profile-unreadable": (["select", "--run", "r", "--max-macs", "1M"], ["cannot read", "profile.json"],
                                  lambda d: unreadable(run_like(d / "r") / "profile.json")),
    "select-profile-not-json": (["select", "--run", "r", "--max-macs", "1M"], ["profile.json", "not valid JSON"],
                                lambda d: (run_like(d / "r") / "profile.json").write_text("{half")),
    # calibrate
    "calibrate-run-a-file": (["calibrate", "--run", "taken"], ["taken", "is a file, not a run folder"],
                             lambda d: (d / "taken").write_text("x")),
    "calibrate-run-empty": (["calibrate", "--run", "r"], ["has no best.pt"], lambda d: folder(d / "r")),
    "calibrate-best-a-folder": (["calibrate", "--run", "r"], ["best.pt", "is a folder"],
                                lambda d: folder(run_like(d / "r") / "best.pt")),
    "calibrate-best-unreadable": (["calibrate", "--run", "r"], ["cannot read checkpoint", "best.pt"],
                                  lambda d: unreadable(run_like(d / "r") / "best.pt")),
    "calibrate-best-wrong-kind": (["calibrate", "--run", "r"], ["best.pt", "TorchScript"],
                                  lambda d: torchscript_file(run_like(d / "r") / "best.pt")),
    # report
    "report-run-a-file": (["report", "taken"], ["taken", "is not a folder"], lambda d: (d / "taken").write_text("x")),
    "report-not-a-run": (["report", "r"], ["r has no results.json"], lambda d: folder(d / "r")),
    "report-results-unreadable": (["report", "r"], ["cannot read", "results.json"],
                                  lambda d: (run_like(d / "r") / "results.json").unlink() or unreadable(d / "r" / "results.json")),
    "report-results-not-json": (["report", "r"], ["results.json", "not valid JSON"],
                                lambda d: (run_like(d / "r") / "results.json").write_text("{half")),
    "report-metrics-unreadable": (["report", "r"], ["cannot read", "metrics.jsonl"],
                                  lambda d: unreadable(run_like(d / "r") / "metrics.jsonl")),
    "report-config-a-folder": (["report", "r"], ["config.yaml", "is a folder"],
                               lambda d: (run_like(d / "r") / "config.yaml").unlink() or folder(d / "r" / "config.yaml")),
    "report-out-a-file": (["report", "r", "--out", "taken"], ["taken"],
                          lambda d: run_like(d / "r") and (d / "taken").write_text("x")),
    # serve (a switchable file, or a run folder whose file it exports first)
    "serve-missing": (["serve", "nothere.onnx"], ["nothere.onnx", "does not exist"], None),
    "serve-folder-not-a-run": (["serve", "r"], ["run folder r", "no best.pt"], lambda d: folder(d / "r")),
    "serve-unreadable": (["serve", "m.onnx"], ["cannot read", "m.onnx"], lambda d: unreadable(d / "m.onnx")),
    "serve-wrong-kind": (["serve", "m.onnx"], ["m.onnx", "not a readable onnx file", "ddnn export --switchable"],
                         lambda d: (d / "m.onnx").write_text("not a model\n")),
}


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below `folder` with its bytes (None for folders and files that cannot be read)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        try:
            out[str(p.relative_to(folder))] = p.read_bytes() if p.is_file() else None
        except OSError:
            out[str(p.relative_to(folder))] = None
    return out


@pytest.mark.parametrize("name", list(PATH_CASES))
def test_every_commands_file_paths_fail_in_one_line_and_touch_nothing(name, tmp_path, monkeypatch, capsys):
    from ddnn.cli import main

    argv, words, setup = PATH_CASES[name]
    if setup:
        setup(tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as err:
        code = err.code
    res = Result(tmp_path, code, *capsys.readouterr())
    assert_one_line_error(res, words)
    assert snapshot(tmp_path) == before


# per command (all but `list`, which reads no file): a case for each kind of bad path, here or in ERROR_CASES
COVERAGE = {
    "train": ("config-missing", "train-config-folder", "train-config-unreadable", "train-config-not-a-mapping"),
    "eval": ("eval-ckpt-missing", "eval-ckpt-folder", "eval-ckpt-unreadable", "eval-ckpt-torchscript"),
    "profile": ("profile-run-missing", "profile-run-a-file", "profile-best-unreadable", "profile-best-wrong-kind"),
    "export": ("export-run-missing", "export-best-a-folder", "export-best-unreadable", "export-best-wrong-kind"),
    "select": ("select-no-profile", "select-profile-a-folder", "select-profile-unreadable", "select-profile-not-json"),
    "calibrate": ("calibrate-run-missing", "calibrate-best-a-folder", "calibrate-best-unreadable",
                  "calibrate-best-wrong-kind"),
    "report": ("report-run-missing", "report-run-a-file", "report-results-unreadable", "report-results-not-json"),
    "serve": ("serve-missing", "serve-folder-not-a-run", "serve-unreadable", "serve-wrong-kind"),
}


def test_file_path_cases_cover_every_command():
    """Missing, a folder for a file (or the reverse), unreadable, the wrong kind: for every command."""
    import argparse

    from ddnn.cli import build_parser
    from ddnn.launch import COMMANDS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(COMMANDS) == set(sub.choices)  # ddnn-torchrun knows every command too
    assert set(COVERAGE) == set(COMMANDS) - {"list"}
    for command, names in COVERAGE.items():
        for name in names:
            argv = (PATH_CASES[name][0] if name in PATH_CASES else ERROR_CASES[name].argv)
            assert argv[0] == command, name
