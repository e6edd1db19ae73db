"""`serve`'s options are the Settings fields they set: declared once, resolved by Settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from service import cli
from service.settings import Settings
from tests.conftest import MODELS_DIR
from tests.test_cli import run

# The options `serve` has always had, as Settings fields (--poll-interval is poll_interval_seconds).
SERVE_FIELDS = {
    "host",
    "port",
    "grpc_port",
    "model_base_path",
    "config",
    "model_config_file",
    "log_level",
    "log_format",
    "poll_interval_seconds",
    "allow_random_weights",
    "auto_export",
    "resnet50_weights",
    "api_keys_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_file",
    "workers",
}


@pytest.fixture
def no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MODELSERVE_* variable of the test runner's own environment reaches Settings."""
    for name in os.environ:
        if name.startswith("MODELSERVE_"):
            monkeypatch.delenv(name)


def test_every_serve_option_is_a_settings_field_with_its_help_and_env_var() -> None:
    serve = typer.main.get_command(cli.app).commands["serve"]  # type: ignore[attr-defined]
    options = {p.name: p for p in serve.params if p.name != "help"}
    assert set(options) == SERVE_FIELDS
    for name, option in options.items():
        field = Settings.model_fields[name]
        assert "--" + name.replace("_", "-") in option.opts
        assert option.envvar is None  # Settings reads the variable, not typer
        shown = Text.from_markup(option.help).plain  # as --help prints it
        assert field.description
        assert shown.startswith(field.description)
        assert f"[env var: MODELSERVE_{name.upper()}]" in shown
    assert "--poll-interval" in options["poll_interval_seconds"].opts  # the flag's older name


def test_serve_help_shows_every_option_and_its_env_var() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0, result.stderr
    for name in SERVE_FIELDS:
        assert "--" + name.replace("_", "-") in result.stdout
        assert f"MODELSERVE_{name.upper()}" in result.stdout
    assert "[default: 8501]" in result.stdout


def served_settings(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> Settings:
    """The Settings `serve` would run with, given `args` and `env` (no server is started)."""
    served: list[Settings] = []
    monkeypatch.setattr(cli, "_serve", lambda settings, config: served.append(settings))
    result = CliRunner().invoke(cli.app, ["serve", *args], env=env)
    assert result.exit_code == 0, result.output
    (settings,) = served
    return settings


@pytest.mark.usefixtures("no_settings_env")
def test_a_flag_beats_its_env_var_which_beats_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MODELSERVE_MODEL_BASE_PATH": str(MODELS_DIR),
        "MODELSERVE_PORT": "not a port",  # never parsed: the flag wins
        "MODELSERVE_GRPC_PORT": "9100",
        "MODELSERVE_LOG_LEVEL": "debug",
    }
    args = ["--port", "9001", "--log-level", "warning", "--poll-interval", "0.5"]
    settings = served_settings(monkeypatch, [*args, "--allow-random-weights"], env)
    assert (settings.port, settings.log_level) == (9001, "warning")  # flags
    assert settings.poll_interval_seconds == 0.5  # by the flag's older name
    assert settings.allow_random_weights is True
    assert settings.grpc_port == 9100  # env
    assert settings.model_base_path == MODELS_DIR
    assert (settings.host, settings.log_format) == ("0.0.0.0", "json")  # defaults


@pytest.mark.usefixtures("no_settings_env")
@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ([], {}, True),  # on by default
        ([], {"MODELSERVE_AUTO_EXPORT": "0"}, False),
        ([], {"MODELSERVE_AUTO_EXPORT": "false"}, False),
        (["--no-auto-export"], {"MODELSERVE_AUTO_EXPORT": "1"}, False),
        (["--auto-export"], {"MODELSERVE_AUTO_EXPORT": "0"}, True),
    ],
)
def test_a_yes_no_setting_can_be_turned_off_by_flag_or_variable(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], expected: bool
) -> None:
    env = {"MODELSERVE_MODEL_BASE_PATH": str(MODELS_DIR), **env}
    assert served_settings(monkeypatch, args, env).auto_export is expected


@pytest.mark.usefixtures("no_settings_env")
def test_a_flag_given_as_its_default_still_beats_the_env_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"MODELSERVE_MODEL_BASE_PATH": str(MODELS_DIR), "MODELSERVE_PORT": "9000"}
    assert served_settings(monkeypatch, ["--port", "8501"], env).port == 8501


@pytest.mark.parametrize(
    ("args", "env", "field"),
    [
        (["--port", "http"], {}, "port"),
        ([], {"MODELSERVE_PORT": "http"}, "port"),
        (["--log-level", "loud"], {}, "log_level"),
        ([], {"MODELSERVE_LOG_FORMAT": "xml"}, "log_format"),
        (["--poll-interval", "-1"], {}, "poll_interval_seconds"),
        ([], {"MODELSERVE_ALLOW_RANDOM_WEIGHTS": "maybe"}, "allow_random_weights"),
        (["--tls-cert-file", "/nonexistent/cert.pem"], {}, "tls_cert_file"),
    ],
)
def test_an_invalid_value_by_flag_or_env_var_is_an_invalid_setting(
    args: list[str], env: dict[str, str], field: str, tmp_path: Path
) -> None:
    result = run("serve", "--model-base-path", str(tmp_path), *args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid setting: "), result.stderr
    assert field in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_default_to_one_per_cpu_and_none_on_a_single_cpu(no_settings_env: None) -> None:
    from service.core.cpu_limit import available_cpus

    cpus = available_cpus()
    assert Settings().front_end_workers() == (cpus if cpus >= 2 else 0)
    assert Settings(workers=0).front_end_workers() == 0
    assert Settings(workers=3).front_end_workers() == 3
