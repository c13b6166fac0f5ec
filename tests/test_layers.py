"""The import graph: layers only look down (ddnn/layers.py holds the table) and no import closes a
circle, counting imports inside functions too; the check itself is shown to fail on a bad graph."""

from pathlib import Path

import pytest

from ddnn.layers import LAYERS, circles, imports_of, layer_of, modules_of, problems

SRC = Path(__file__).resolve().parents[1] / "src" / "ddnn"


def test_ddnn_imports_only_look_down_and_close_no_circle():
    found = problems(SRC)
    assert not found, "\n" + "\n".join(found)


def test_every_module_has_a_layer():
    modules = modules_of(SRC)
    assert len(modules) > 60 and "ddnn.engine.trainer" in modules and "ddnn" in modules
    ranks = {name: layer_of(name) for name in modules}  # raises for a module in no layer
    names = [layer for layer, _ in LAYERS]
    assert names.index("foundation") == ranks["ddnn.checkpoint"] < ranks["ddnn.config.schema"] < ranks["ddnn.models.cost"]
    assert ranks["ddnn.models.calibrate"] < ranks["ddnn.methods.kd"] < ranks["ddnn.engine.teachers"]
    assert ranks["ddnn.deploy.run"] < ranks["ddnn.experiments.seeds"] < ranks["ddnn.cli"] == ranks["ddnn"]
    assert ranks["ddnn.deploy.serve.policy"] == ranks["ddnn.deploy.serve.app"] == ranks["ddnn.deploy.run"]


def package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A throw-away `ddnn` package holding `files` (path below ddnn/ -> source)."""
    root = tmp_path / "ddnn"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_upward_import_inside_a_function_is_named_with_its_line(tmp_path):
    root = package(tmp_path, {
        "errors.py": "import os\n\n\ndef hint():\n    from ddnn.engine.trainer import Trainer\n    return Trainer\n",
        "engine/__init__.py": "", "engine/trainer.py": "from ddnn.errors import hint\nTrainer = hint\n",
    })
    found = problems(root)
    assert len(found) == 2, found  # the upward import, and the circle it closes
    assert found[0].startswith(f"{root / 'errors.py'}:5: ddnn.errors (foundation) imports ddnn.engine.trainer "
                               "(engine), a higher layer")
    assert "import circle" in found[1] and "ddnn.engine.trainer" in found[1] and "ddnn.errors" in found[1]


def test_a_circle_within_one_layer_is_found(tmp_path):
    root = package(tmp_path, {
        "models/__init__.py": "", "models/a.py": "from ddnn.models import b\n",
        "models/b.py": "import ddnn.models.c\n", "models/c.py": "def f():\n    import ddnn.models.a\n",
        "models/d.py": "from ddnn.models.a import x\n",  # points into the circle, is not part of it
    })
    modules = modules_of(root)
    imports = [i for m, p in modules.items() for i in imports_of(m, p, modules)]
    chains = circles(imports)
    assert len(chains) == 1
    assert [i.source for i in chains[0]] == ["ddnn.models.a", "ddnn.models.b", "ddnn.models.c"]
    assert [i.line for i in chains[0]] == [1, 1, 2]
    found = problems(root)
    assert found == [f"import circle: ddnn.models.a ({root / 'models/a.py'}:1) -> ddnn.models.b "
                     f"({root / 'models/b.py'}:1) -> ddnn.models.c ({root / 'models/c.py'}:2) -> ddnn.models.a"]


def test_downward_and_same_layer_imports_pass(tmp_path):
    root = package(tmp_path, {
        "errors.py": "", "config/__init__.py": "from ddnn.config.schema import X\n",
        "config/schema.py": "from ddnn.errors import E\nX = 1\n",
        "cli.py": "from ddnn import config\nfrom . import errors\n",
    })
    assert problems(root) == []


def test_a_module_outside_the_table_is_refused():
    with pytest.raises(ValueError, match="in no layer"):
        layer_of("ddnn_extra.thing")


def test_the_design_doc_states_the_same_layers_in_the_same_order():
    design = (SRC.parents[1] / "docs" / "design.md").read_text()
    assert " -> ".join(name for name, _ in LAYERS) in design
    for name, modules in LAYERS:
        row = next(line for line in design.splitlines() if line.startswith(f"| {name} |"))
        assert all(f"`{m.removeprefix('ddnn.').replace('.', '/')}" in row or f"`{m}`" in row for m in modules), row
