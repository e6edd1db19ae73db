"""The serving config: YAML, TOML and TF Serving's model_config_list, discovery, and errors that
name the file and the key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.core.layout import existing_versions, model_names
from service.core.serving_config import (
    BatchingConfig,
    ModelConfig,
    PlacementConfig,
    ServingConfig,
    ServingConfigError,
    VersionPolicy,
    discover_serving_config,
    load_serving_config,
    load_tfserving_model_config,
)
from tests.conftest import MODELS_DIR


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_yaml(tmp_path: Path, text: str) -> ServingConfig:
    return load_serving_config(write(tmp_path / "serving.yaml", text), tmp_path / "repo")


def yaml_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ServingConfigError) as info:
        load_yaml(tmp_path, text)
    return str(info.value)


def make_repo(base: Path, versions: dict[str, list[int]]) -> Path:
    for name, numbers in versions.items():
        for number in numbers:
            (base / name / str(number)).mkdir(parents=True)
            (base / name / str(number) / "saved_model.pb").write_bytes(b"")
    return base


# --- our YAML and TOML files -------------------------------------------------------------------

FULL_YAML = """\
models:
  - name: digits
  - name: votes
    base_path: elsewhere/votes
    version_policy: all
  - name: sentiment
    base_path: /srv/models/sentiment
    version_policy: {specific: [3, 1]}
    version_labels: {stable: 1, canary: 3}
    batching: {}
    placement: {}
  - name: resnet50
    version_policy:
      latest: 2
  - name: a
    version_policy: {all: {}}
  - name: b
    version_policy: {all: true}
"""

FULL_TOML = """\
[[models]]
name = "digits"

[[models]]
name = "votes"
base_path = "elsewhere/votes"
version_policy = "all"

[[models]]
name = "sentiment"
base_path = "/srv/models/sentiment"
version_policy = { specific = [3, 1] }
version_labels = { stable = 1, canary = 3 }
batching = {}
placement = {}

[[models]]
name = "resnet50"
[models.version_policy]
latest = 2

[[models]]
name = "a"
version_policy = { all = {} }

[[models]]
name = "b"
version_policy = { all = true }
"""


@pytest.mark.parametrize(
    ("filename", "text"), [("s.yaml", FULL_YAML), ("s.yml", FULL_YAML), ("s.toml", FULL_TOML)]
)
def test_yaml_and_toml_files_load_the_same_config(tmp_path: Path, filename: str, text: str) -> None:
    path = write(tmp_path / "conf" / filename, text)
    config = load_serving_config(path, tmp_path / "repo")

    assert config.source == str(path)
    assert [m.name for m in config.models] == ["digits", "votes", "sentiment", "resnet50", "a", "b"]
    digits, votes, sentiment, resnet50, a, b = config.models
    assert digits.base_path == tmp_path / "repo" / "digits"
    assert digits.version_policy.describe() == "latest 1"
    assert votes.base_path == tmp_path / "conf" / "elsewhere" / "votes"
    assert votes.version_policy.describe() == "all"
    assert sentiment.base_path == Path("/srv/models/sentiment")
    assert sentiment.version_policy.describe() == "specific [1, 3]"
    assert sentiment.version_labels == {"stable": 1, "canary": 3}
    assert resnet50.version_policy == VersionPolicy(kind="latest", num_versions=2)
    assert a.version_policy.kind == b.version_policy.kind == "all"


def test_defaults(tmp_path: Path) -> None:
    model = load_yaml(tmp_path, "models:\n  - name: digits\n").models[0]
    assert model.base_path == tmp_path / "repo" / "digits"
    assert model.version_policy == VersionPolicy() == VersionPolicy(kind="latest", num_versions=1)
    assert model.version_labels == {}
    assert model.batching == BatchingConfig()
    assert model.placement == PlacementConfig()


def test_relative_base_path_is_relative_to_the_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    path = write(tmp_path / "etc" / "serving.yaml", "models:\n  - {name: d, base_path: ../m/d}\n")
    model = load_serving_config(path, Path("repo")).models[0]
    assert model.base_path.is_absolute()
    assert model.base_path.resolve() == (tmp_path / "m" / "d").resolve()


def test_default_base_path_follows_a_relative_model_base_path_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "etc" / "serving.yaml", "models:\n  - name: d\n")
    model = load_serving_config(Path("etc/serving.yaml"), Path("repo")).models[0]
    assert path.is_file()
    assert model.base_path == tmp_path / "repo" / "d"


def test_model_lookup(tmp_path: Path) -> None:
    config = load_yaml(tmp_path, FULL_YAML)
    found = config.model("votes")
    assert found is not None
    assert found.version_policy.kind == "all"
    assert config.model("nope") is None


def test_a_dumped_config_validates_back_to_the_same_config(tmp_path: Path) -> None:
    config = load_yaml(tmp_path, FULL_YAML)
    dumped = config.model_dump()
    assert dumped["models"][2]["version_policy"] == {"specific": [1, 3]}
    assert dumped["models"][1]["version_policy"] == "all"
    assert ServingConfig.model_validate(dumped) == config


# --- version policies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "on_disk", "selected"),
    [
        ({"latest": 1}, [2, 5, 1], [5]),
        ({"latest": 2}, [1, 2, 5], [2, 5]),
        ({"latest": 5}, [1, 2, 5], [1, 2, 5]),
        ("all", [5, 1, 2], [1, 2, 5]),
        ({"specific": [2, 5]}, [1, 2, 5], [2, 5]),
        ({"specific": [3]}, [1, 2, 5], []),
        ({"latest": 1}, [], []),
    ],
)
def test_select(form: Any, on_disk: list[int], selected: list[int]) -> None:
    assert VersionPolicy.model_validate(form).select(on_disk) == selected


@pytest.mark.parametrize(
    ("form", "description"),
    [
        ({"latest": 2}, "latest 2"),
        ("all", "all"),
        ({"all": {}}, "all"),
        ({"all": True}, "all"),
        ({"all": None}, "all"),
        ({"specific": [3, 1]}, "specific [1, 3]"),
    ],
)
def test_policy_forms_and_describe(form: Any, description: str) -> None:
    assert VersionPolicy.model_validate(form).describe() == description


def test_policy_is_frozen() -> None:
    policy = VersionPolicy()
    with pytest.raises(ValidationError):
        policy.num_versions = 3
    assert policy.num_versions == 1


# --- errors: every problem named by file and key -----------------------------------------------


@pytest.mark.parametrize(
    ("models_yaml", "expected"),
    [
        (
            "  - {name: a}\n  - {name: b, version_policy: {latest: 0}}",
            "models[1].version_policy: latest must be >= 1",
        ),
        ("  - {name: a, version_policy: {latest: true}}", "latest must be an integer"),
        ("  - {name: a, version_policy: {latest: two}}", "latest must be an integer"),
        ("  - {name: a, version_policy: newest}", "models[0].version_policy: expected {latest: N}"),
        ("  - {name: a, version_policy: {}}", "models[0].version_policy: empty version policy"),
        ("  - {name: a, version_policy: }", "models[0].version_policy: expected {latest: N}"),
        (
            "  - {name: a, version_policy: {latest: 2, all: {}}}",
            "models[0].version_policy: give only one of latest, all, specific (got latest, all)",
        ),
        ("  - {name: a, version_policy: {newest: 2}}", "unknown version policy 'newest'"),
        ("  - {name: a, version_policy: {all: false}}", "all takes no settings"),
        ("  - {name: a, version_policy: {specific: []}}", "specific needs at least one version"),
        ("  - {name: a, version_policy: {specific: 2}}", "specific must be a list of integer"),
        ("  - {name: a, version_policy: {specific: [0, 1]}}", "versions must be >= 1, got [0, 1]"),
        ("  - {name: a, version_policy: {specific: [2, 2]}}", "lists a version twice: [2, 2]"),
        (
            "  - {name: a}\n  - {name: b}\n  - {name: a}",
            "serving.yaml: models: duplicate model name 'a' (models[0] and models[2])",
        ),
        ("  - {name: a, version_labels: {2nd: 1}}", "version_labels: '2nd' is not a valid label"),
        ("  - {name: a, version_labels: {'can ary': 1}}", "'can ary' is not a valid label name"),
        (
            "  - {name: a, version_labels: {canary: 0}}",
            "models[0].version_labels: label 'canary': version must be >= 1, got 0",
        ),
        ("  - {name: a, version_labels: {canary: '2'}}", "version_labels.canary: Input should be"),
        (
            "  - {name: a, version_policy: {specific: [1]}, version_labels: {canary: 2}}",
            "models[0]: version_labels: 'canary' points to version 2, which the version policy"
            " (specific [1]) never serves",
        ),
        (
            "  - {name: a, batchng: {}}",
            "models[0].batchng: unknown key (did you mean 'batching'?)",
        ),
        (
            "  - {name: a, zzz: 1}",
            "models[0].zzz: unknown key (allowed: name, base_path, version_policy,",
        ),
        (
            "  - {name: a, batching: {max_batch: 8}}",
            "models[0].batching.max_batch: unknown key (did you mean 'max_batch_size'?)",
        ),
        (
            "  - {name: a, batching: {max_batch_size: 8, allowed_batch_sizes: [1, 4]}}",
            "models[0].batching: the largest allowed batch size (4) must equal max_batch_size (8)",
        ),
        ("  - {name: a, batching: {max_batch_size: 0}}", "models[0].batching.max_batch_size:"),
        (
            "  - {name: a, batching: {refill_hold: 1.0}}",
            "models[0].batching: refill_hold applies only with refill: true",
        ),
        (
            "  - {name: a, batching: {refill: true, refill_hold: 0}}",
            "models[0].batching.refill_hold:",
        ),
        (
            "  - {name: a, batching: {refill: true, refill_hold: 3}}",
            "models[0].batching.refill_hold:",
        ),
        ("  - {name: a, placement: {device: tpu}}", "models[0].placement.device: device must be"),
        ("  - {name: a, placement: {instances: 0}}", "models[0].placement.instances:"),
        ("  - {base_path: x}", "models[0].name: required key is missing"),
        ("  - {name: 'my model'}", "models[0].name: 'my model' is not a valid model name"),
        ("  - {name: ../etc}", "'../etc' is not a valid model name"),
        ("  - {name: a, base_path: ''}", "models[0].base_path: base_path must not be empty"),
    ],
)
def test_bad_model_entries_are_named_by_file_and_key(
    tmp_path: Path, models_yaml: str, expected: str
) -> None:
    message = yaml_error(tmp_path, f"models:\n{models_yaml}\n")
    assert message.startswith(f"{tmp_path / 'serving.yaml'}: ")
    assert expected in message
    assert "pydantic" not in message
    assert "Value error" not in message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    message = yaml_error(
        tmp_path,
        "models:\n  - {name: a, version_policy: {latest: 0}}\n  - {name: b, placemnt: {}}\n",
    )
    lines = message.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("models[0].version_policy: latest must be >= 1, got 0")
    assert lines[1].endswith("models[1].placemnt: unknown key (did you mean 'placement'?)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: []\n", "models: no models: list at least one"),
        ("models:\n", "models: Input should be a valid list"),
        ("", "expected a mapping with a `models` list, got None"),
        ("- name: a\n", "expected a mapping with a `models` list"),
        ("modles:\n  - name: a\n", "modles: unknown key (did you mean 'models'?)"),
        ("source: x\nmodels:\n  - name: a\n", "source: unknown key"),
    ],
)
def test_bad_top_level(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in yaml_error(tmp_path, text)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = yaml_error(tmp_path, "models:\n  - name: a\n  - name: [b\n")
    assert message == (
        f"{tmp_path / 'serving.yaml'}: line 4, column 1: invalid YAML: while parsing a flow"
        " sequence at line 3: expected ',' or ']', but got '<stream end>'"
    )


def test_a_key_given_twice_in_yaml_is_an_error_not_last_one_wins(tmp_path: Path) -> None:
    message = yaml_error(
        tmp_path, "models:\n  - name: a\n    version_policy: all\n    version_policy: {latest: 2}\n"
    )
    assert "line 4, column 5" in message
    assert "duplicate key 'version_policy'" in message


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "serving.toml", '[[models]]\nname = "a"\nbase_path = \n')
    with pytest.raises(ServingConfigError, match=r"serving\.toml: invalid TOML: .*line 3"):
        load_serving_config(path, tmp_path)


def test_toml_errors_are_named_by_key_too(tmp_path: Path) -> None:
    path = write(tmp_path / "serving.toml", '[[models]]\nname = "a"\nversion_policy = "latest"\n')
    with pytest.raises(ServingConfigError, match=r"serving\.toml: models\[0\]\.version_policy: "):
        load_serving_config(path, tmp_path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "serving.json", '{"models": [{"name": "a"}]}')
    with pytest.raises(ServingConfigError, match=r"serving\.json: unknown config format '\.json'"):
        load_serving_config(path, tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ServingConfigError, match=r"nope\.yaml: no such file"):
        load_serving_config(tmp_path / "nope.yaml", tmp_path)


def test_model_config_needs_a_base_path_outside_a_file() -> None:
    with pytest.raises(ValidationError, match="base_path"):
        ModelConfig.model_validate({"name": "a"})
    assert ModelConfig(name="a", base_path=Path("rel")).base_path == Path("rel").absolute()


# --- no config file: discovery -----------------------------------------------------------------


def test_discover_serves_every_model_with_a_version_at_latest_1(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"b": [1, 3], "a": [2]})
    (repo / "exporting" / "tmp-1").mkdir(parents=True)  # no integer version yet: not a model
    (repo / "README.md").write_text("not a model")

    config = discover_serving_config(repo)

    assert [m.name for m in config.models] == ["a", "b"]
    assert [m.base_path for m in config.models] == [repo / "a", repo / "b"]
    assert all(m.version_policy.describe() == "latest 1" for m in config.models)
    assert config.source == f"every model under {repo} (no config file)"


def test_discover_an_empty_repository_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ServingConfigError, match=r"no models found"):
        discover_serving_config(tmp_path)


def test_discover_rejects_a_folder_name_that_cannot_be_a_url(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"my model": [1]})
    with pytest.raises(ServingConfigError, match=r"'my model' is not a valid model name"):
        discover_serving_config(repo)


# --- the shipped example -----------------------------------------------------------------------


def test_the_shipped_serving_yaml_serves_every_shipped_model() -> None:
    path = MODELS_DIR / "serving.yaml"
    config = load_serving_config(path, MODELS_DIR)
    assert {m.name for m in config.models} == {"digits", "votes", "sentiment"}
    assert {m.name for m in config.models} == set(model_names(MODELS_DIR))
    for model in config.models:
        assert model.base_path == MODELS_DIR / model.name
        assert model.version_policy.describe() == "latest 1"
        assert model.version_policy.select(existing_versions(model.base_path)) != []


def test_the_commented_out_examples_in_the_shipped_file_are_valid(tmp_path: Path) -> None:
    text = (MODELS_DIR / "serving.yaml").read_text(encoding="utf-8")
    live_digits = re.search(r"  - name: digits.*?\n\n", text, re.DOTALL)
    assert live_digits is not None
    uncommented = re.sub(
        r"^  # ([ -])", r"  \1", text.replace(live_digits.group(0), ""), flags=re.M
    )

    config = load_serving_config(write(tmp_path / "serving.yaml", uncommented), tmp_path)

    digits, resnet50 = config.model("digits"), config.model("resnet50")
    assert digits is not None
    assert resnet50 is not None
    assert digits.version_policy.describe() == "specific [1, 2]"
    assert digits.version_labels == {"stable": 1, "canary": 2}
    assert resnet50.base_path == tmp_path / "resnet50"


# --- TF Serving's --model_config_file ----------------------------------------------------------

TFSERVING_CONFIG = """\
model_config_list {
  config {
    name: "digits"
    base_path: "/models/digits"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "votes"
    base_path: "votes"
  }
  config {
    name: "sentiment"
    base_path: "sentiment"
    model_version_policy { latest { num_versions: 0 } }
  }
  config {
    name: "all_of_them"
    base_path: "all"
    model_version_policy { all {} }
  }
  config {
    name: "newest_three"
    base_path: "n3"
    model_version_policy { latest { num_versions: 3 } }
  }
}
"""


def test_tfserving_model_config_list(tmp_path: Path) -> None:
    path = write(tmp_path / "conf" / "models.config", TFSERVING_CONFIG)
    config = load_tfserving_model_config(path)

    assert config.source == f"{path} (TF Serving model_config_list)"
    digits, votes, sentiment, all_of_them, newest_three = config.models
    assert digits.name == "digits"
    assert digits.base_path == Path("/models/digits")
    assert digits.version_policy.describe() == "specific [1, 2]"
    assert digits.version_labels == {"stable": 1, "canary": 2}
    assert votes.base_path == tmp_path / "conf" / "votes"
    assert votes.version_policy.describe() == "latest 1"  # no policy: TF Serving's default
    assert sentiment.version_policy.describe() == "latest 1"  # num_versions 0 means 1
    assert all_of_them.version_policy.describe() == "all"
    assert newest_three.version_policy.describe() == "latest 3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'model_config_list { config { name: "a" base_path: "/m" model_platform: "onnx" } }',
            "model_config_list.config[0].model_platform: only 'tensorflow' is supported,"
            " got 'onnx'",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" model_type: OTHER } }',
            "model_config_list.config[0].model_type: only TENSORFLOW is supported",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" logging_config {} } }',
            "logging_config: request logging is not supported",
        ),
        (
            'custom_model_config { type_url: "type.googleapis.com/x.Y" value: "" }',
            "custom_model_config is not supported",
        ),
        ("", "expected a model_config_list"),
        ("model_config_list { }", "model_config_list.config: no models"),
        (
            'model_config_list { config { name: "a" } }',
            "model_config_list.config[0].base_path: required key is missing",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" } config { name: "a" '
            'base_path: "/n" } }',
            "duplicate model name 'a'",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m"\n'
            "  model_version_policy { specific { } } } }",
            "model_config_list.config[0].version_policy: specific needs at least one version",
        ),
        (
            'model_config_list {\n  config { nme: "a" } }',
            'line 2, column 12: Message type "tensorflow.serving.ModelConfig" has no field named',
        ),
    ],
)
def test_tfserving_config_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "models.config", text)
    with pytest.raises(ServingConfigError) as info:
        load_tfserving_model_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_tfserving_config_reports_platform_and_validation_problems_together(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "models.config",
        'model_config_list { config { name: "a b" base_path: "/m" model_platform: "onnx" } }',
    )
    with pytest.raises(ServingConfigError) as info:
        load_tfserving_model_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "model_platform" in lines[0]
    assert "model_config_list.config[0].name: 'a b' is not a valid model name" in lines[1]
