"""Hardening: model names that cannot leave the model base path, request paths that reach no
file, error messages without file-system paths, security headers on every response, and no
unsafe deserialisation (pickle, unsafe YAML, eval) anywhere in the sources."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.core.serving_config import (
    ModelConfig,
    ServingConfigError,
    load_serving_config,
    load_tfserving_model_config,
)
from service.settings import Settings
from tests.conftest import REPO_ROOT
from tests.saved_models import copy_versions, write_corrupt_version
from tests.server import assert_no_paths, error_message, running_server, wait_for

pytest_plugins = ["tests.gateway_fixtures"]

# --- model names ----------------------------------------------------------------------------

BAD_NAMES = [
    "..",
    "../etc",
    "a/../b",
    "a/b",
    "a\\b",
    ".hidden",
    "a..b",
    "a\x00b",
    "a\nb",
    "-rf",
    "_x",
    " a",
    "a b",
    "a:b",
    "a%2Fb",
    "café",
    "x" * 129,
    "",
]
GOOD_NAMES = ["digits", "resnet50", "plus", "a", "7", "half_plus-two.v2", "A" * 128]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_model_names_that_could_leave_the_base_path_are_refused(tmp_path: Path, name: str) -> None:
    config = tmp_path / "serving.toml"
    escaped = name.replace("\\", "\\\\").replace("\x00", "\\u0000").replace("\n", "\\n")
    config.write_text(f'[[models]]\nname = "{escaped}"\n', encoding="utf-8")
    with pytest.raises(ServingConfigError) as raised:
        load_serving_config(config, tmp_path / "models")
    message = str(raised.value)
    assert "models[0].name" in message and "is not a valid model name" in message
    assert "without '..'" in message


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_usual_model_names_are_accepted(tmp_path: Path, name: str) -> None:
    model = ModelConfig.model_validate(
        {"name": name}, context={"model_base_path": tmp_path / "models"}
    )
    assert model.base_path == (tmp_path / "models" / name).absolute()


def test_tf_serving_configs_get_the_same_name_check(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "../../etc" base_path: "/models/x" } }\n')
    with pytest.raises(ServingConfigError, match=r"'\.\./\.\./etc' is not a valid model name"):
        load_tfserving_model_config(config)


def test_an_explicit_base_path_may_be_anywhere(tmp_path: Path) -> None:
    """As in TF Serving: an operator-written base path is taken as written (a name alone
    never leads out of the model base path)."""
    config = tmp_path / "etc" / "serving.yaml"
    config.parent.mkdir()
    config.write_text("models:\n  - {name: shared, base_path: /srv/shared-models/shared}\n")
    (model,) = load_serving_config(config, tmp_path / "models").models
    assert model.base_path == Path("/srv/shared-models/shared")


# --- requests and error messages --------------------------------------------------------------


@dataclass
class Leaky:
    url: str
    repo: Path


@pytest.fixture(scope="module")
def leaky(model_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leaky]:
    """`plus` (version 1) and `broken` (a corrupt version 1), in a repository whose path is
    distinctive, so a message showing it is easy to spot."""
    repo = tmp_path_factory.mktemp("secret-place") / "models-under-here"
    copy_versions(model_library, repo / "plus", "plus", [1])
    write_corrupt_version(repo, "broken", 1)
    settings = Settings(model_base_path=repo, poll_interval_seconds=0)
    with running_server(settings, wait_ready=False) as url:

        def broken_failed() -> bool:
            status = httpx.get(f"{url}/v1/models/broken").json()["model_version_status"]
            return status[0]["state"] == "END"

        wait_for(broken_failed, timeout=60, what="broken to fail loading")
        wait_for(
            lambda: httpx.get(f"{url}/v1/models/plus").status_code == 200,
            timeout=60,
            what="plus",
        )
        yield Leaky(url, repo)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/models/nosuch", 404),  # unknown model
        ("POST", "/v1/models/plus/versions/7:predict", 404),  # version not on disk
        ("POST", "/v1/models/plus/labels/stable:predict", 404),  # unknown label
        ("GET", "/v2/models/nosuch/ready", 404),
        ("POST", "/v1/models/broken:predict", 503),  # no version loaded
        ("POST", "/v1/models/broken/versions/1:predict", 404),  # the version failed to load
        ("POST", "/v2/models/broken/versions/1/infer", 404),
        ("POST", "/v1/models/plus:predict", 400),  # bad body
    ],
)
def test_error_messages_show_no_file_system_paths(
    leaky: Leaky, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, leaky.url + path, json={"instances": "not a list"})
    error_message(response, status)
    assert_no_paths(response.text, leaky.repo)


def test_status_of_a_failed_version_shows_no_paths(leaky: Leaky) -> None:
    status = httpx.get(f"{leaky.url}/v1/models/broken").json()["model_version_status"][0]
    assert status["status"]["error_message"]  # there is a message...
    overview = httpx.get(f"{leaky.url}/api/v1/models").text
    ready = httpx.get(f"{leaky.url}/readyz").text
    for text in (str(status), overview, ready):
        assert_no_paths(text, leaky.repo)  # ...without the server's paths


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/v1/models/%2e%2e/metadata",
        "/v1/models/..%2Fplus/versions/1",
        "/v2/models/%2E%2E%2Fplus",
        "/static/..%2F..%2Fsettings.py",
        "/static/%2e%2e/index.html",
        "/static-offline-docs/..%2F__init__.py",
    ],
)
def test_paths_in_urls_reach_no_file(leaky: Leaky, path: str) -> None:
    response = httpx.get(leaky.url + path)
    assert response.status_code == 404, response.text
    assert "import" not in response.text and "<html" not in response.text
    assert_no_paths(response.text, leaky.repo)


# --- security headers -------------------------------------------------------------------------


def test_every_answer_carries_security_headers(leaky: Leaky) -> None:
    for path in ("/healthz", "/v1/models/nosuch", "/metrics", "/static/app.js", "/openapi.json"):
        headers = httpx.get(leaky.url + path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["referrer-policy"] == "no-referrer", path
        assert headers["content-security-policy"].startswith("default-src 'none'"), path
        assert "strict-transport-security" not in headers  # plain HTTP: no HSTS


def test_page_and_docs_have_their_own_policies(leaky: Leaky) -> None:
    page = httpx.get(f"{leaky.url}/").headers["content-security-policy"]
    assert "script-src 'self';" in page and "unsafe" not in page
    assert "frame-ancestors 'none'" in page
    docs = httpx.get(f"{leaky.url}/docs")
    csp = docs.headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'sha256-" in script_src
    assert "frame-ancestors 'none'" in csp
    assert docs.headers["x-frame-options"] == "DENY"


def test_docs_load_nothing_from_elsewhere(leaky: Leaky) -> None:
    """The docs pages name only this server's files, and ReDoc's script is served without the
    logo it would fetch from Redocly's CDN (tests/test_web_page.py checks in a browser)."""
    for page in ("/docs", "/redoc"):
        html = httpx.get(leaky.url + page).text
        sources = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert sources and all(s.startswith("/static-offline-docs/") for s in sources), sources
        assert "https://" not in html, page
    script = httpx.get(f"{leaky.url}/static-offline-docs/redoc.standalone.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert b"cdn.redoc.ly" not in script.content


# --- no unsafe deserialisation ----------------------------------------------------------------

SCANNED = ("service", "training")
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}


def _name(node: ast.AST) -> str:
    """`np.load` for an attribute chain, `eval` for a name, "" otherwise."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_uses(source: str) -> list[str]:
    """What in `source` could run code from data: pickle-family imports, np.load without an
    explicit allow_pickle=False, yaml.load without a SafeLoader (or a subclass defined in the
    same file), yaml.unsafe_load / full_load, eval / exec, Keras' safe_mode=False."""
    tree = ast.parse(source)
    safe_loaders = set(SAFE_YAML_LOADERS)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and {_name(b).split(".")[-1] for b in node.bases} & (
            SAFE_YAML_LOADERS
        ):
            safe_loaders.add(node.name)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                modules.append(node.module or "")
            found += [f"{line}: import {m}" for m in modules if m.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        called = _name(node.func)
        if called in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(f"{line}: {called}()")
        elif called.endswith(".load") and called.split(".")[0] in ("np", "numpy"):
            allowed = _keyword(node, "allow_pickle")
            if not (isinstance(allowed, ast.Constant) and allowed.value is False):
                found.append(f"{line}: {called}() without allow_pickle=False")
        elif called in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _name(loader).split(".")[-1] not in safe_loaders:
                found.append(f"{line}: {called}() without a SafeLoader")
        elif called in ("yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
            found.append(f"{line}: {called}()")
        safe_mode = _keyword(node, "safe_mode")
        if isinstance(safe_mode, ast.Constant) and safe_mode.value is False:
            found.append(f"{line}: {called}(safe_mode=False)")
    return found


def test_no_unsafe_deserialisation_in_the_sources() -> None:
    sources = [p for folder in SCANNED for p in sorted((REPO_ROOT / folder).rglob("*.py"))]
    assert len(sources) > 20, sources  # the scan does look at the code
    found = {
        str(path.relative_to(REPO_ROOT)): uses
        for path in sources
        if (uses := unsafe_uses(path.read_text(encoding="utf-8")))
    }
    assert found == {}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import pickle", "import pickle"),
        ("from joblib import load", "import joblib"),
        ("import numpy as np\nnp.load('a.npz')", "without allow_pickle=False"),
        ("np.load('a.npz', allow_pickle=True)", "without allow_pickle=False"),
        ("yaml.load(text)", "without a SafeLoader"),
        ("yaml.load(text, Loader=yaml.Loader)", "without a SafeLoader"),
        ("yaml.unsafe_load(text)", "yaml.unsafe_load()"),
        ("eval(text)", "eval()"),
        ("exec(code)", "exec()"),
        ("keras.models.load_model(p, safe_mode=False)", "safe_mode=False"),
    ],
)
def test_the_scan_finds_unsafe_code(source: str, expected: str) -> None:
    (use,) = unsafe_uses(source)
    assert expected in use


def test_the_scan_passes_safe_code() -> None:
    safe = """
import numpy as np, yaml
class Strict(yaml.SafeLoader): pass
np.load("a.npz", allow_pickle=False)
yaml.load(text, Loader=Strict)
yaml.load(text, yaml.SafeLoader)
yaml.safe_load(text)
model.evaluate(x)
"""
    assert unsafe_uses(safe) == []
