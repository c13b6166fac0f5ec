"""docs/config.md is generated from the config dataclasses: it must be current, and name every key."""

import dataclasses
import typing
from pathlib import Path

from ddnn.config import Config, flatten, to_dict
from ddnn.config.reference import COMMAND, DOC, main, reference

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_reference_is_current():
    assert DOC == REPO / "docs" / "config.md"
    assert DOC.read_text() == reference(), f"docs/config.md is out of date with the config dataclasses; run: {COMMAND}"


def test_every_key_has_a_row_with_help_and_a_default():
    text = reference()
    keys = flatten(to_dict(Config()))
    assert len(keys) >= 80
    for key in keys:
        assert f"| `{key}` |" in text, key

    def leaves(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield from leaves(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else [f]
    assert all(f.metadata.get("help") for f in leaves(Config))
    # a range check's words are what the reference shows as allowed, next to the default
    assert "| `optim.momentum` | `0.9` |  | a number in [0, 1) | SGD momentum |" in text
    assert "| `method.temperature` | `1.0` (ekd-paper: `3.0`) |  | a number > 0 |" in text
    assert "| `data.batch_size` | `128` | `64` |" in text  # the bundled default run's own value


def test_check_mode_finds_a_stale_file(tmp_path, capsys):
    out = tmp_path / "config.md"
    assert main(["--check", "--out", str(out)]) == 1  # missing
    assert main(["--out", str(out)]) == 0 and out.read_text() == reference()
    assert main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("SGD momentum", "momentum"))
    assert main(["--check", "--out", str(out)]) == 1
    assert f"out of date: run {COMMAND}" in capsys.readouterr().out
