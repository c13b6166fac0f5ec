"""The typed config: defaults, YAML files, dotted overrides, one-line errors, bundled configs."""

import dataclasses
from pathlib import Path

import pytest
import yaml

import ddnn.config as config_module
from ddnn.config import (
    Config, DataConfig, MethodConfig, ModelConfig, OptimConfig, RuntimeConfig, SyntheticConfig, bundled_configs, find_config,
    from_dict, load_config, to_dict,
)
from ddnn.errors import DdnnError


def error_of(ref=None, overrides=()) -> str:
    with pytest.raises(DdnnError) as info:
        load_config(ref, list(overrides))
    msg = str(info.value)
    assert msg and "\n" not in msg, msg  # one line
    return msg


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def test_no_config_is_the_bundled_default_run():
    cfg = load_config()
    assert cfg == load_config(None, []) == load_config("default")
    assert cfg.name == "default" and cfg.data.name == "mnist5k" and cfg.method.name == "ekd"
    assert cfg.model.name == "resnet20" and cfg.model.subnets == ["resnet14", [1, 1, 2], "resnet8"]
    assert cfg.model.widths == [8, 16, 32]
    assert cfg.train.epochs == 12 and cfg.data.batch_size == 64 and cfg.method.temperature == 1.0


def test_the_default_before_issue_20_stays_bundled_for_the_recorded_benchmarks():
    cfg = load_config("mnist5k-resnet32")
    assert cfg.model.name == "resnet32" and cfg.model.subnets == ["resnet20", "resnet14", "resnet8"]
    assert cfg.model.widths is None and cfg.train.epochs == 12 and cfg.data.batch_size == 64


def test_dataclass_defaults_are_ddnns_recipe_and_the_preset_the_papers():
    cfg = Config()
    assert cfg.name == "default"
    assert cfg.data.name == "mnist5k" and cfg.model.name == "resnet56" and cfg.method.name == "ekd"
    assert cfg.model.subnets == ["resnet44", "resnet32", "resnet20"]
    # ddnn's EKD recipe (issue 8): KL at T = 1 from the detached full net, no attention term
    assert (cfg.method.alpha, cfg.method.beta, cfg.method.temperature) == (1.0, 0.0, 1.0)
    assert cfg.method.attention == "zsum" and cfg.method.detach_teacher and cfg.model.head == "auto"
    # the paper's (docs/methods.md, EKD)
    paper = MethodConfig.named("ekd-paper")
    assert (paper.alpha, paper.beta, paper.temperature, paper.attention, paper.stages) == (1.0, 1.0, 3.0, "zsum", None)
    assert paper.detach_teacher and paper.reduce == "sum" and paper.sub_ce == 1.0
    # mutable defaults are not shared between instances
    a, b = Config(), Config()
    a.data.augment.append("flip")
    a.model.subnets.pop()
    assert b.data.augment == ["crop"] and len(b.model.subnets) == 3


def test_dotted_overrides():
    cfg = load_config(None, [
        "optim.lr=0.05", "model.subnets=[resnet14,[1,1,1]]", "data.augment=[crop,flip]", "runtime.progress=false",
        "train.epochs=3", "name=exp1", "data.root=/data/cifar", "data.train_limit=100", "data.synthetic.size=64",
        "model.widths=[8,16,32]", "optim.nesterov=true", "runtime.channels_last=auto", "schedule.warmup_epochs=1",
    ])
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.model.subnets == ["resnet14", [1, 1, 1]]
    assert cfg.data.augment == ["crop", "flip"]
    assert cfg.runtime.progress is False
    assert cfg.train.epochs == 3 and cfg.name == "exp1"
    assert cfg.data.root == "/data/cifar" and cfg.data.train_limit == 100
    assert cfg.data.synthetic.size == 64 and cfg.data.synthetic.image_size == 32  # siblings keep defaults
    assert cfg.model.widths == [8, 16, 32]
    assert cfg.optim.nesterov is True and cfg.runtime.channels_last == "auto"
    assert cfg.schedule.warmup_epochs == 1.0 and isinstance(cfg.schedule.warmup_epochs, float)
    # untouched keys keep the default run's values
    assert cfg.optim.momentum == 0.9 and cfg.model.name == "resnet20" and cfg.data.name == "mnist5k"
    assert load_config(None).runtime.channels_last is False  # the default's narrow nets run faster in NCHW


def test_overrides_values_are_yaml():
    cfg = load_config(None, ["data.train_limit=null", "data.augment=[]", "runtime.progress=true",
                             "runtime.channels_last=true", "optim.lr=1", "model.subnets=[]"])
    assert cfg.data.train_limit is None and cfg.data.augment == []
    assert cfg.runtime.progress is True and cfg.runtime.channels_last is True
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float  # an int is accepted for a float
    assert cfg.model.subnets == []
    # an empty value is null
    assert load_config(None, ["data.root="]).data.root is None
    # later overrides win; spaces around the key are ignored; '=' inside the value is kept
    assert load_config(None, ["optim.lr=0.1", "optim.lr=0.2"]).optim.lr == 0.2
    assert load_config(None, [" optim.lr =0.3"]).optim.lr == 0.3
    assert load_config(None, ["name=a=b"]).name == "a=b"


def test_yaml_file(tmp_path):
    path = tmp_path / "my-exp.yaml"
    path.write_text(
        "optim:\n"
        "  lr: 0.05\n"
        "  nesterov: yes        # YAML 1.1 boolean\n"
        "model:\n"
        "  name: resnet32\n"
        "  subnets: [resnet20, [1, 1, 1]]\n"
        "  zero_init_residual: on\n"
        "data:\n"
        "  augment:\n"
        "    - crop\n"
        "    - flip\n"
        "  train_limit: ~\n"
        "  synthetic:\n"
        "    classes: 4\n"
        "runtime:\n"
        "  progress: off\n"
        "train:\n"
        "  epochs: 3\n"
    )
    cfg = load_config(str(path))
    assert cfg.name == "my-exp"  # the file's stem when the file names none
    assert cfg.optim.lr == 0.05 and cfg.optim.nesterov is True
    assert cfg.model.name == "resnet32" and cfg.model.subnets == ["resnet20", [1, 1, 1]]
    assert cfg.model.zero_init_residual is True
    assert cfg.data.augment == ["crop", "flip"] and cfg.data.train_limit is None
    assert cfg.data.synthetic.classes == 4 and cfg.data.synthetic.size == 512
    assert cfg.runtime.progress is False and cfg.train.epochs == 3
    # everything else is the default
    want = Config(name="my-exp")
    want.optim = OptimConfig(lr=0.05, nesterov=True)
    want.model = ModelConfig(name="resnet32", subnets=["resnet20", [1, 1, 1]], zero_init_residual=True,
                             head="private")  # `auto` is resolved when read: private classifiers for ekd
    want.data = DataConfig(augment=["crop", "flip"], synthetic=SyntheticConfig(classes=4))
    want.runtime = RuntimeConfig(progress=False)
    want.train.epochs = 3
    assert cfg == want

    # overrides apply on top of the file
    cfg2 = load_config(str(path), ["optim.lr=0.01", "name=other", "data.synthetic.size=10"])
    assert cfg2.optim.lr == 0.01 and cfg2.optim.nesterov is True and cfg2.name == "other"
    assert cfg2.data.synthetic.size == 10 and cfg2.data.synthetic.classes == 4

    # a name in the file wins over the stem
    named = tmp_path / "x.yaml"
    named.write_text("name: given\n")
    assert load_config(str(named)).name == "given"
    # an empty file is refused (issue 18: it used to train the dataclass defaults, ResNet-56 on CIFAR-10)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(DdnnError, match="empty.yaml is empty"):
        load_config(str(empty))


def test_yaml_file_section_mapping_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    msg = error_of(str(path))
    assert "optim.lrr" in msg and "'lr'" in msg


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_unknown_top_level_key():
    msg = error_of(overrides=["nosuchkey=1"])
    assert "nosuchkey" in msg and "unknown config key" in msg
    for section in ("data", "model", "method", "optim", "schedule", "train", "runtime"):
        assert section in msg  # the allowed keys are listed


def test_misspelt_nested_key():
    msg = error_of(overrides=["optim.lrr=0.1"])
    assert "optim.lrr" in msg
    assert "did you mean 'optim.lr'" in msg or "did you mean 'lr'" in msg
    msg = error_of(overrides=["data.synthetic.sise=5"])
    assert "data.synthetic.sise" in msg and "'size'" in msg
    msg = error_of(overrides=["modle.name=resnet20"])
    assert "modle" in msg and "did you mean 'model'" in msg


def test_unknown_key_far_from_any_name_lists_allowed():
    msg = error_of(overrides=["optim.zzzzzz=1"])
    assert "optim.zzzzzz" in msg and "did you mean" not in msg
    for name in ("lr", "momentum", "weight_decay", "nesterov"):
        assert name in msg


@pytest.mark.parametrize("override, words", [
    ("optim.lr=fast", ["optim.lr", "float", "fast"]),
    ("train.epochs=2.5", ["train.epochs", "int", "2.5"]),
    ("train.epochs=true", ["train.epochs", "int", "True"]),
    ("optim.lr=true", ["optim.lr", "float"]),
    ("optim.nesterov=1", ["optim.nesterov", "bool"]),
    ("optim.nesterov=maybe", ["optim.nesterov", "bool", "maybe"]),
    ("data.augment=crop", ["data.augment", "list"]),
    ("data.augment=[crop,rotate]", ["data.augment[1]", "rotate", "'crop'", "'flip'"]),
    ("model.subnets=[resnet20,5]", ["model.subnets[1]", "5"]),
    ("model.subnets=[[1,x,1]]", ["model.subnets[0]"]),
    ("data.train_limit=many", ["data.train_limit", "many"]),
    ("data.batch_size=[1]", ["data.batch_size", "int"]),
    ("name=5", ["name", "str"]),
    ("runtime.progress=sometimes", ["runtime.progress", "sometimes", "'auto'", "bool"]),
    ("runtime.channels_last=1", ["runtime.channels_last"]),
])
def test_wrong_type(override, words):
    msg = error_of(overrides=[override])
    for word in words:
        assert word in msg, (word, msg)


@pytest.mark.parametrize("override, words", [
    ("model.bn=switchable", ["model.bn", "switchable", "'private'", "'shared'"]),
    ("model.shortcut=identity", ["model.shortcut", "'conv'", "'pad'"]),
    ("schedule.name=step", ["schedule.name", "'cosine'", "'multistep'", "'constant'"]),
    ("runtime.precision=fp64", ["runtime.precision", "'bf16'"]),
    ("method.attention=sum", ["method.attention", "'zsum'", "'at'"]),
    ("optim.name=adam", ["optim.name", "'sgd'"]),
    ("train.select=best", ["train.select", "'mean'", "'full'"]),
    ("model.stem=big", ["model.stem", "'cifar'", "'imagenet'"]),
])
def test_bad_choice(override, words):
    msg = error_of(overrides=[override])
    for word in words:
        assert word in msg, (word, msg)


def test_malformed_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 0.1\n  momentum: [0.9\nmodel:\n  name: resnet20\n")
    msg = error_of(str(path))
    assert str(path) in msg and "YAML" in msg
    assert "line 4" in msg
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("optim:\n\tlr: 0.1\n")
    msg = error_of(str(tabs))
    assert str(tabs) in msg and "line 2" in msg


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")])
def test_yaml_not_a_mapping(tmp_path, text, kind):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    msg = error_of(str(path))
    assert str(path) in msg and "mapping" in msg and kind in msg


def test_override_without_equals():
    msg = error_of(overrides=["optim.lr"])
    assert "'optim.lr'" in msg and "key=value" in msg


def test_config_file_not_found(tmp_path):
    missing = tmp_path / "missing.yaml"
    msg = error_of(str(missing))
    assert str(missing) in msg and "not found" in msg
    msg = error_of("ekd/no-such-config")
    assert "ekd/no-such-config" in msg


def test_config_path_is_a_directory(tmp_path):
    msg = error_of(str(tmp_path))
    assert str(tmp_path) in msg


@pytest.mark.parametrize("override, key", [("data=5", "data"), ("data.synthetic=3", "data.synthetic"),
                                           ("model=[1,2]", "model"), ("runtime=true", "runtime")])
def test_section_given_a_scalar(override, key):
    msg = error_of(overrides=[override])
    assert f"'{key}'" in msg and "mapping" in msg


def test_subkey_of_a_scalar():
    msg = error_of(overrides=["optim.lr=0.1", "optim.lr.x=1"])
    assert "optim.lr.x" in msg and "'lr'" in msg
    msg = error_of(overrides=["data=5", "data.name=x"])
    assert "data.name" in msg


def test_section_given_a_word_sets_its_name():
    cfg = load_config(None, ["method=individual", "model=resnet20"])
    assert cfg.method.name == "individual" and cfg.model.name == "resnet20"
    assert cfg.model.subnets == ["resnet14", [1, 1, 2], "resnet8"]  # the section's other keys stay
    assert cfg.method.temperature == 1.0
    msg = error_of(overrides=["optim=fast"])
    assert "'optim.name'" in msg and "'sgd'" in msg


def test_section_given_a_word_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: ddnn\n")
    assert load_config(str(path)).method.name == "ddnn"
    path.write_text("runtime: fast\n")  # runtime has no name field: still a section
    msg = error_of(str(path))
    assert "'runtime'" in msg and "mapping" in msg


def test_scientific_notation_float():
    assert load_config(None, ["optim.weight_decay=5e-4"]).optim.weight_decay == pytest.approx(5e-4)


# ---------------------------------------------------------------------------------------------
# bundled configs
# ---------------------------------------------------------------------------------------------


def test_bundled_configs_listing():
    names = bundled_configs()
    assert isinstance(names, list) and names == sorted(names)
    on_disk = sorted(str(p.relative_to(config_module.BUNDLED).with_suffix(""))
                     for p in Path(config_module.BUNDLED).rglob("*.yaml"))
    assert names == on_disk


@pytest.mark.parametrize("name", bundled_configs() or [pytest.param(None, marks=pytest.mark.skip("no bundled configs yet"))])
def test_bundled_config_loads(name):
    from ddnn.experiments.pipeline import Pipeline, is_pipeline

    if is_pipeline(name):  # a pipeline (kd/...): every stage is a complete, known config
        for stage in Pipeline(name).stages:
            from ddnn.engine.setup import check_config

            check_config(stage["cfg"])
        with pytest.raises(DdnnError, match="pipeline"):
            load_config(name)
        return
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert find_config(name).is_file()
    assert from_dict(to_dict(cfg)) == cfg
    # the names it gives (dataset, method, model, sub-nets) are known too
    from ddnn.engine.setup import check_config

    check_config(cfg)


# ---------------------------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    [],
    ["model.subnets=[resnet20,[1,2,3]]", "data.augment=[flip]", "runtime.progress=false", "data.root=/x",
     "model.widths=[4,8,16]", "method.stages=[0,2]", "data.synthetic.channels=1", "name=rt"],
])
def test_to_dict_round_trip(overrides):
    cfg = load_config(None, overrides)
    d = to_dict(cfg)
    assert isinstance(d, dict) and isinstance(d["data"], dict) and isinstance(d["data"]["synthetic"], dict)
    assert from_dict(d) == cfg
    # through YAML too, as a run folder's config.yaml
    assert from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg
    assert set(d) == {f.name for f in dataclasses.fields(Config)}


def test_from_dict_partial_and_checked():
    cfg = from_dict({"optim": {"lr": 0.2}})
    assert cfg.optim.lr == 0.2 and cfg.optim.momentum == 0.9 and cfg.data == DataConfig()
    with pytest.raises(DdnnError, match="optim.lrr"):
        from_dict({"optim": {"lrr": 0.2}})


@pytest.mark.parametrize("override, allowed", [
    ("data.batch_size=0", ">= 1"), ("data.eval_batch_size=-1", ">= 1"), ("data.val_fraction=1.5", "[0, 1)"),
    ("data.test_fraction=0", "(0, 1)"), ("data.train_limit=0", "null or an integer >= 1"),
    ("data.crop_padding=-1", ">= 0"), ("data.synthetic.classes=1", ">= 2"), ("method.temperature=0", "> 0"),
    ("optim.lr=-0.1", "> 0"), ("optim.momentum=1", "[0, 1)"), ("optim.weight_decay=-1e-4", ">= 0"),
    ("schedule.gamma=0", "> 0"), ("schedule.warmup_epochs=-1", ">= 0"), ("train.epochs=0", ">= 1"),
    ("runtime.threads=-2", ">= 0"),
])
def test_numbers_out_of_range(override, allowed):
    msg = error_of(overrides=[override])
    assert f"'{override.split('=')[0]}'" in msg and allowed in msg


def test_numbers_at_the_edge_of_their_range_are_accepted():
    cfg = load_config(None, ["data.val_fraction=0", "data.train_limit=1", "data.crop_padding=0", "optim.momentum=0",
                             "optim.weight_decay=0", "schedule.warmup_epochs=0", "train.epochs=1", "runtime.threads=0"])
    assert cfg.data.val_fraction == 0 and cfg.data.train_limit == 1 and cfg.train.epochs == 1


def test_ekd_paper_preset_starts_from_the_papers_values():
    from ddnn.config import EKD_PAPER

    cfg = load_config(None, ["method=ekd-paper", "method.temperature=3"])
    assert cfg.method.name == "ekd-paper" and cfg.model.head == "shared"  # the paper shares the classifier
    assert {k: getattr(cfg.method, k) for k in EKD_PAPER} == EKD_PAPER
    # keys given after the preset still apply, and an explicit head is kept
    cfg = load_config(None, ["method=ekd-paper", "method.temperature=4", "model.head=private"])
    assert cfg.method.temperature == 4 and cfg.method.alpha == 1.0 and cfg.model.head == "private"
    # ddnn's own recipe is the plain `ekd` default, with private classifiers
    ours = load_config(None, ["method=ekd"])
    assert ours.model.head == "private" and ours.method.name == "ekd"


def test_a_saved_config_from_before_a_key_existed_keeps_what_that_run_did():
    from ddnn.config import saved_config, to_dict

    old = to_dict(load_config(None, []))
    del old["model"]["head"], old["method"]["distill_warmup"], old["method"]["ensemble"]
    cfg = saved_config(old)
    assert cfg.model.head == "shared" and cfg.method.distill_warmup == 0 and cfg.method.ensemble == 0
    assert saved_config(to_dict(load_config(None, []))) == load_config(None, [])  # a current one reads back as is
