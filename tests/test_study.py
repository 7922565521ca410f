"""edgerobust.study.spec: parsing and validating study files; one clear line per mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgerobust.errors import ConfigError
from edgerobust.study.spec import load_study, parse_prune_target

REPO_ROOT = Path(__file__).resolve().parents[1]
PACS = REPO_ROOT.parent / "shared" / "data" / "pacs" / "PACS"

GOOD = """
[study]
name = "t"
seed = 3

[dataset]
kind = "synthetic"
per_class = 4
size = 32
sources = ["studio"]

[train]
archs = ["tinyresnet", "resnet18"]
image_size = 32
epochs = 2

[compress.prune]
bases = ["resnet18"]
targets = ["4.51M", "tinyresnet", 0.5, 800000]

[compress.distill]
pairs = [{ teacher = "resnet18", student = "tinyresnet" }]

[compress.quantize]
engines = ["x86"]

[export]
formats = ["onnx", "ptl"]
precisions = ["fp32", "int8"]

[eval]
runtimes = ["onnxruntime", "ptl"]
threads = [1, 2]

[attack]
attacks = ["fgsm", "saltpepper"]
"""


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_study_parses_into_frozen_dataclasses(tmp_path):
    s = load_study(write(tmp_path, GOOD))
    assert s.study.name == "t" and s.study.seed == 3
    assert s.train.archs == ("tinyresnet", "resnet18")
    assert s.train.lr == 1e-4  # unspecified values take the paper's defaults
    (prune,) = s.prune
    kinds = [(t.params, t.arch, t.ratio) for t in prune.targets]
    assert kinds == [
        (4_510_000, None, None),
        (None, "tinyresnet", None),
        (None, None, 0.5),
        (800_000, None, None),
    ]
    assert prune.epochs == s.train.epochs  # retraining defaults to the baselines' epochs
    assert s.distill.pairs[0].teacher == "resnet18" and s.distill.alpha == 0.2
    assert s.attack_sources == ("studio",)  # the first source, as the paper attacks baseline-A
    with pytest.raises(AttributeError):
        s.train.epochs = 5  # frozen
    assert s.to_dict()["train"]["archs"] == ("tinyresnet", "resnet18")


def test_prune_may_be_an_array_of_tables_with_their_own_paths(tmp_path):
    text = GOOD.replace(
        '[compress.prune]\nbases = ["resnet18"]\ntargets = ["4.51M", "tinyresnet", 0.5, 800000]',
        '[[compress.prune]]\nbases = ["resnet18"]\ntargets = ["4.51M"]\n'
        '[[compress.prune]]\nbases = ["tinyresnet"]\ntargets = [0.3, "x"]',
    )
    with pytest.raises(ConfigError, match=re.escape("compress.prune[1].targets[1]")):
        load_study(write(tmp_path, text))
    ok = text.replace('[0.3, "x"]', "[0.3]")
    assert len(load_study(write(tmp_path, ok)).prune) == 2


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        # the example: a bad prune target names its index
        (
            'targets = ["4.51M", "tinyresnet", 0.5, 800000]',
            'targets = ["4.51M", "big"]',
            "compress.prune.targets[1]",
        ),
        ("targets = [", "targets = [1.5, ", "compress.prune.targets[0]"),
        ("seed = 3", "seed = 3\ncolour = 1", "study.colour"),  # unknown key
        ("epochs = 2", "epochs = 2\nepoch = 3", "train.epoch"),  # a typo is not a default
        ("epochs = 2", 'epochs = "2"', "train.epochs"),
        ("epochs = 2", "epochs = 0", "train.epochs"),
        ('archs = ["tinyresnet", "resnet18"]', 'archs = ["resnet19"]', "train.archs[0]"),
        (
            'archs = ["tinyresnet", "resnet18"]',
            'archs = ["tinyresnet", "tinyresnet"]',
            "train.archs[1]",
        ),
        ('sources = ["studio"]', 'sources = ["photo"]', "dataset.sources[0]"),
        ('kind = "synthetic"', 'kind = "zip"', "dataset.kind"),
        ('bases = ["resnet18"]', 'bases = ["resnet34"]', "compress.prune.bases[0]"),
        ('teacher = "resnet18"', 'teacher = "resnet50"', "compress.distill.pairs[0].teacher"),
        (
            'student = "tinyresnet"',
            'student = "tinyresnet", size = 2',
            "compress.distill.pairs[0].size",
        ),
        ('runtimes = ["onnxruntime", "ptl"]', 'runtimes = ["onnxruntime"]', "eval.runtimes"),
        ("threads = [1, 2]", "threads = [0]", "eval.threads[0]"),
        ('engines = ["x86"]', 'engines = ["arm"]', "compress.quantize.engines[0]"),
        ('attacks = ["fgsm", "saltpepper"]', 'attacks = ["fgsm", "boom"]', "attack.attacks[1]"),
        ('attacks = ["fgsm", "saltpepper"]', "attacks = []", "attack.attacks"),
        (
            'attacks = ["fgsm", "saltpepper"]',
            'attacks = ["saltpepper"]\nsaltpepper_stop = "fast"',
            "attack.saltpepper_stop",
        ),
        ('[compress.quantize]\nengines = ["x86"]\n', "", "export.precisions"),  # int8 needs PTSQ
        ("[study]", "[studdy]\n[study]", "studdy"),
        ("epochs = 2", "epochs = 2\nhead_epochs = 2", "train.head_epochs"),  # < epochs
        ('archs = ["tinyresnet", "resnet18"]', 'archs = ["timm:"]', "train.archs[0]"),
        (
            'precisions = ["fp32", "int8"]',
            'precisions = ["fp32", "int8"]\nmodels = { pte = ["baseline"] }',
            "export.models.pte",
        ),
        (
            'precisions = ["fp32", "int8"]',
            'precisions = ["fp32", "int8"]\nmodels = { ptl = ["int8"] }',
            "export.models.ptl[0]",
        ),
        (
            'attacks = ["fgsm", "saltpepper"]',
            'attacks = ["fgsm"]\nstop = "early"',
            "attack.stop",
        ),
        ('name = "t"', 'name = "a b"', "study.name"),
    ],
)
def test_malformed_study_names_the_bad_key_in_one_line(tmp_path, old, new, key):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1), "bad.toml")
    with pytest.raises(ConfigError) as exc:
        load_study(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"bad.toml: {key}: ")


def test_missing_tables_and_toml_syntax_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^s\.toml: train: required table is missing$"):
        load_study(write(tmp_path, GOOD.split("[train]")[0], "s.toml"))
    with pytest.raises(ConfigError, match=r"^s\.toml: not valid TOML: .*line"):
        load_study(write(tmp_path, GOOD.replace("seed = 3", "seed = = 3"), "s.toml"))
    with pytest.raises(ConfigError, match="study file not found"):
        load_study(tmp_path / "nope.toml")


def test_folder_paths_are_relative_to_the_study_file(tmp_path, synthetic_root):
    import os

    folder = tmp_path / "configs"
    folder.mkdir()
    rel = os.path.relpath(synthetic_root, folder)
    text = GOOD.replace(
        'kind = "synthetic"\nper_class = 4\nsize = 32', f'kind = "folder"\npath = "{rel}"'
    )
    s = load_study(write(folder, text))
    assert s.dataset.path == str(synthetic_root.resolve())
    with pytest.raises(ConfigError, match=r"dataset\.path: folder not found"):
        load_study(write(folder, text.replace(rel, rel + "-missing")))
    with pytest.raises(ConfigError, match=r"dataset\.per_class: only for kind"):
        load_study(write(folder, text.replace("[train]", "per_class = 3\n[train]")))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("4.51M", 4_510_000), ("850k", 850_000), (" 2m ", 2_000_000), (123456, 123456)],
)
def test_prune_target_counts(value, expected):
    assert parse_prune_target(value, "k", "f").params == expected


def test_shipped_quickstart_is_valid():
    s = load_study(REPO_ROOT / "configs" / "quickstart.toml")
    assert s.dataset.kind == "synthetic" and "resnet18" in s.train.archs
    assert s.prune and s.distill and s.quantize and s.export and s.eval and s.attack


@pytest.mark.pacs
@pytest.mark.skipif(not PACS.is_dir(), reason="needs ../shared/data/pacs/PACS")
@pytest.mark.parametrize("name", ["pacs-resnet18", "pacs-paper", "pacs-efficientnet-lite"])
def test_shipped_pacs_studies_are_valid(name):
    s = load_study(REPO_ROOT / "configs" / f"{name}.toml")
    assert Path(s.dataset.path) == PACS.resolve()
    assert {"photo", "sketch"} <= set(s.dataset.sources)


def test_new_study_keys_reach_the_plan(tmp_path):
    """head_epochs (LP-FT), timm:NAME, export.models, quantize.force and .fallback, attack stop
    and auto batch."""
    from edgerobust.study.plan import plan_study

    text = (
        GOOD.replace("epochs = 2", "epochs = 2\nhead_epochs = 1", 1)
        .replace('engines = ["x86"]', 'engines = ["x86"]\nforce = true\nfallback = false')
        .replace(
            'precisions = ["fp32", "int8"]',
            'precisions = ["fp32", "int8"]\nmodels = { ptl = ["baseline"] }',
        )
        .replace(
            'attacks = ["fgsm", "saltpepper"]',
            'attacks = ["fgsm", "cw", "saltpepper"]\nbatch_size = 0',
        )
    )
    study = load_study(write(tmp_path, text))
    assert study.train.head_epochs == 1 and study.quantize.force
    assert study.export.models == {"ptl": ("baseline",)} and study.attack.stop == "settled"
    stages = plan_study(study).stages
    train = [s for s in stages if s.kind == "train"]
    assert train and all(s.settings["head_epochs"] == 1 for s in train)
    assert all(s.settings["force"] for s in stages if s.kind == "quantize")
    assert all(s.settings["fallback"] is False for s in stages if s.kind == "quantize")
    ptl = [s.meta for s in stages if s.kind == "export" and s.meta["format"] == "ptl"]
    assert ptl and {m["compression"] for m in ptl} == {"baseline", "int8"}  # not pruned/distilled
    onnx = {
        s.meta["compression"] for s in stages if s.kind == "export" and s.meta["format"] == "onnx"
    }
    assert {"pruned", "distilled"} <= onnx
    attacks = [s for s in stages if s.kind == "attack"]
    assert attacks and all(
        s.settings["stop"] == "settled" and s.settings["batch_size"] is None for s in attacks
    )
    # left at their defaults, the keys stay out of the settings: older studies keep their keys
    plain = plan_study(load_study(write(tmp_path, GOOD, "plain.toml"))).stages
    for s in plain:
        assert "head_epochs" not in s.settings and "force" not in s.settings or s.kind == "export"
        assert "fallback" not in s.settings or s.kind == "export"
    timm = load_study(
        write(
            tmp_path,
            GOOD.replace('"tinyresnet", "resnet18"', '"timm:mobilenetv3_small_050", "resnet18"'),
            "timm.toml",
        )
    )
    assert timm.train.archs[0] == "timm:mobilenetv3_small_050"
