"""Locust load tests of modelserve: every protocol and task, realistic bodies, load shapes,
server metrics before and after, and pass/fail thresholds.

    locust -f loadtests/locustfile.py --headless -H http://localhost:8501 \\
        --shape step --step-users 4 --step-seconds 30 --max-users 48 --tags digits \\
        --csv results/digits --csv-full-history --html results/digits.html \\
        --max-fail-ratio 0.01 --max-p95-ms 500
    python -m loadtests.report results/digits       # plots and a markdown summary

User classes (pick some by name on the command line, e.g. `... V2User SentimentUser`):
TFServingUser (POST /v1/models/{m}:predict), V2User (POST /v2/models/{m}/infer),
DigitUploadUser, ImageUploadUser, SentimentUser, PartyUser (the task API, /api/v1/...).
Tags: a model (digits, sentiment, votes, resnet50) and a protocol (tfserving, v2, task):
`--tags sentiment` runs every sentiment task, `--exclude-tags tfserving v2` only the task API.
Models the server does not serve (resnet50 unless exported) are left out with a warning, or are
an error when named in --tags. Defaults: [tool.locust] in pyproject.toml; every option of
ours: `locust -f loadtests/locustfile.py --help` (the "modelserve" group). docs/load-tests.md.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Locust imports this file by path: make the repository importable from any directory.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from locust import FastHttpUser, LoadTestShape, TaskSet, events, tag, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests import shapes
from loadtests.gate import Thresholds, judge
from loadtests.payloads import Bodies, Upload, load_corpus, multipart

log = logging.getLogger("loadtests")

MODELS = ("digits", "sentiment", "votes", "resnet50")
PROTOCOLS = ("tfserving", "v2", "task")


# -- command-line options -------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("modelserve", "load shape, payloads and thresholds")
    group.add_argument(
        "--shape",
        choices=shapes.SHAPES,
        default="soak",
        help="soak: --users for --run-time; step: a step ramp to --max-users; spike: "
        "--users with a spike to --spike-users",
    )
    group.add_argument("--step-users", type=int, default=4, help="users added per step")
    group.add_argument("--step-seconds", type=float, default=30, help="duration of a step")
    group.add_argument("--max-users", type=int, default=48, help="users of the last step")
    group.add_argument("--spike-users", type=int, default=64, help="users during the spike")
    group.add_argument("--spike-at", type=float, default=30, help="seconds before the spike")
    group.add_argument("--spike-seconds", type=float, default=30, help="duration of the spike")
    group.add_argument(
        "--max-items", type=int, default=1, help="items per request: 1 to this many, at random"
    )
    group.add_argument(
        "--think-time", type=float, default=0.0, help="mean pause between a user's requests, s"
    )
    group.add_argument(
        "--photos",
        default="",
        help="folder of photos to upload (default: the data folder's photos/, else generated)",
    )
    group.add_argument("--corpus-size", type=int, default=256, help="digits and texts to draw from")
    group.add_argument("--seed", type=int, default=0, help="seed of the payload choices")
    group.add_argument(
        "--metrics-url",
        default="",
        help="the server's Prometheus metrics, scraped at start and stop (default: "
        "HOST/metrics; 'off' to skip)",
    )
    group.add_argument(
        "--max-fail-ratio", type=float, default=None, help="fail the run above this ratio"
    )
    group.add_argument(
        "--max-p95-ms", type=float, default=None, help="fail the run above this p95 (ms)"
    )


# -- setup: payloads, the tasks the server can answer ---------------------------------------


@dataclass
class RunState:
    """What the init and test_start events prepare for the users and the run record."""

    bodies: Bodies | None = None
    max_items: int = 1
    think_time: float = 0.0
    started: str = ""


state = RunState()


@events.init.add_listener
def _prepare(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is None:  # an Environment made in code: nothing to prepare
        return
    options = _options(environment)
    if options.max_items < 1:
        sys.exit("error: --max-items must be at least 1")
    photos = Path(options.photos) if options.photos else None
    corpus = load_corpus(photos, size=options.corpus_size, seed=options.seed)
    state.bodies = Bodies(corpus, seed=options.seed)
    state.max_items, state.think_time = options.max_items, options.think_time
    if environment.host:
        _leave_out_unserved_models(environment, environment.host)
    _drop_user_classes_without_tasks(environment)


def _leave_out_unserved_models(environment: Environment, host: str) -> None:
    """Exclude the tasks of models the server does not serve; error if --tags named one."""
    options = _options(environment)
    wanted_by_tag = set(options.tags or []) & set(MODELS)
    unserved = [m for m in _models_in_tasks(environment) if not _serves(host, m)]
    if named := sorted(set(unserved) & wanted_by_tag):
        sys.exit(f"error: {host} does not serve {', '.join(named)} (--tags)")
    if unserved:
        log.warning("%s does not serve %s: those tasks are left out", host, ", ".join(unserved))
        options.exclude_tags = [*(options.exclude_tags or []), *unserved]


def _models_in_tasks(environment: Environment) -> list[str]:
    tags = set().union(*(_task_tags(t) for u in environment.user_classes for t in u.tasks))
    return [model for model in MODELS if model in tags]


def _serves(host: str, model: str) -> bool:
    """Has the server an AVAILABLE version of `model` (TF Serving's status route)?"""
    try:
        with urllib.request.urlopen(f"{host}/v1/models/{model}", timeout=10) as answer:
            versions = json.load(answer).get("model_version_status", [])
    except urllib.error.HTTPError:
        return False  # 404: not served; 503: no version loaded
    except (urllib.error.URLError, OSError) as exc:
        sys.exit(f"error: cannot reach {host}: {exc}")
    return any(v.get("state") == "AVAILABLE" for v in versions)


def _drop_user_classes_without_tasks(environment: Environment) -> None:
    """Locust spawns a class whose tasks were all filtered out by tags and fails it on every
    turn; keep only classes with a task left."""
    options = _options(environment)
    tags = set(options.tags) if options.tags else None
    exclude = set(options.exclude_tags or [])
    kept = [
        user_class
        for user_class in environment.user_classes
        if any(_selected(_task_tags(t), tags, exclude) for t in user_class.tasks)
    ]
    if not kept:
        sys.exit("error: no task is left after --tags / --exclude-tags (and unserved models)")
    environment.user_classes[:] = kept


def _task_tags(task_function: Any) -> set[str]:
    return set(getattr(task_function, "locust_tag_set", set()))


def _selected(task_tags: set[str], tags: set[str] | None, exclude: set[str]) -> bool:
    return (tags is None or bool(task_tags & tags)) and not task_tags & exclude


# -- server metrics before and after, thresholds, the run record ----------------------------


def _options(environment: Environment) -> Any:
    """The parsed command line (Locust's Namespace, with our options)."""
    assert environment.parsed_options is not None, "run through the locust command"
    return environment.parsed_options


def _in_charge(environment: Environment) -> bool:
    """The master or the single local process (workers only send requests)."""
    return not isinstance(environment.runner, WorkerRunner)


def _save_metrics(environment: Environment, moment: str) -> None:
    options = _options(environment)
    url = options.metrics_url or f"{environment.host}/metrics"
    if options.metrics_url == "off" or not options.csv_prefix or not environment.host:
        return
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read()
    except (urllib.error.URLError, OSError) as exc:
        log.warning("could not scrape %s %s the run: %s", url, moment, exc)
        return
    Path(f"{options.csv_prefix}_metrics_{moment}.prom").write_bytes(text)


@events.test_start.add_listener
def _on_start(environment: Environment, **_: Any) -> None:
    if _in_charge(environment):
        state.started = _now()
        _save_metrics(environment, "before")


@events.test_stop.add_listener
def _on_stop(environment: Environment, **_: Any) -> None:
    if _in_charge(environment):
        _save_metrics(environment, "after")


@events.quitting.add_listener
def _gate(environment: Environment, **_: Any) -> None:
    if not _in_charge(environment):
        return
    options = _options(environment)
    thresholds = Thresholds(options.max_fail_ratio, options.max_p95_ms)
    total = environment.stats.total
    verdict = judge(
        total.num_requests, total.fail_ratio, total.get_response_time_percentile(0.95), thresholds
    )
    if thresholds.any:
        environment.process_exit_code = 0 if verdict.passed else 1
        outcome = "passed" if verdict.passed else "FAILED: " + "; ".join(verdict.reasons)
        log.info("thresholds %s (%s)", outcome, verdict.summary)
    if options.csv_prefix:
        _write_run_record(environment, thresholds, verdict.passed, verdict.reasons)


def _write_run_record(
    environment: Environment, thresholds: Thresholds, passed: bool, reasons: list[str]
) -> None:
    """PREFIX_run.json: what was run, for loadtests/report.py's summary."""
    options = _options(environment)
    shape = LoadProfile.options_of(options)
    record = {
        "host": environment.host,
        "shape": options.shape,
        "shape_parameters": shape,
        "user_classes": [u.__name__ for u in environment.user_classes],
        "tags": options.tags,
        "exclude_tags": options.exclude_tags,
        "max_items": options.max_items,
        "think_time": options.think_time,
        "payloads": state.bodies.corpus.sources if state.bodies else {},
        "started": state.started,
        "stopped": _now(),
        "thresholds": {k: v for k, v in vars(thresholds).items() if v is not None},
        "verdict": {"passed": passed, "reasons": reasons} if thresholds.any else None,
    }
    path = Path(f"{options.csv_prefix}_run.json")
    path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- the load shape -------------------------------------------------------------------------


class LoadProfile(LoadTestShape):
    """The --shape schedule (loadtests/shapes.py); --users, --spawn-rate, --run-time apply."""

    use_common_options = True
    stages: list[shapes.Stage] | None = None

    @staticmethod
    def options_of(options: Any) -> dict[str, Any]:
        """The options that define the chosen shape."""
        names = {
            "soak": ["num_users", "run_time"],
            "step": ["step_users", "step_seconds", "max_users"],
            "spike": ["num_users", "spike_users", "spike_at", "spike_seconds"],
        }[options.shape]
        return {name: getattr(options, name) for name in [*names, "spawn_rate"]}

    def tick(self) -> tuple[int, float] | None:
        if self.stages is None:
            self.stages = self._schedule()
        stage = shapes.stage_at(self.stages, self.get_run_time())  # type: ignore[no-untyped-call]
        return None if stage is None else (stage.users, stage.spawn_rate)

    def _schedule(self) -> list[shapes.Stage]:
        assert self.runner is not None
        options = _options(self.runner.environment)
        users, rate = options.num_users or 1, options.spawn_rate or 1
        try:
            if options.shape == "step":
                steps = options.step_users, options.step_seconds, options.max_users
                return shapes.step_ramp(*steps, rate)
            if options.shape == "spike":
                spike = options.spike_users, options.spike_at, options.spike_seconds
                return shapes.spike(users, *spike, rate)
        except ValueError as exc:
            sys.exit(f"error: {exc}")
        return shapes.soak(users, options.run_time, rate)


# -- users ----------------------------------------------------------------------------------


def _items() -> int:
    return random.randint(1, state.max_items)


def _bodies() -> Bodies:
    if state.bodies is None:
        raise RuntimeError("payloads are prepared by the init event (run through locust)")
    return state.bodies


_DIGITS = re.compile(r"\d+")


def _failure(status: int, content: bytes | None, error: BaseException | None) -> str:
    """A failure message that groups well in Locust's table (numbers masked)."""
    if status == 0:
        return f"connection error: {type(error).__name__ if error else 'unknown'}"
    try:
        message = str(orjson.loads(content or b"").get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message = ""
    return f"HTTP {status}: {_DIGITS.sub('N', message)[:120]}".rstrip(": ")


class ModelServeUser(FastHttpUser):
    """Sends a request, checks the answer: status 200 and one answer per item sent."""

    abstract = True

    def wait_time(self) -> float:
        return random.expovariate(1 / state.think_time) if state.think_time > 0 else 0.0

    def send(
        self,
        path: str,
        body: bytes,
        sent: int,
        answered: Callable[[Any], int],
        *,
        content_type: str = "application/json",
        name: str | None = None,
    ) -> None:
        headers = {"content-type": content_type}
        payload: Any = body  # bytes are sent as they are (Locust's hint says str | dict)
        with self.client.post(
            path, data=payload, headers=headers, name=name or path, catch_response=True
        ) as response:
            if response.status_code != 200:
                error = getattr(response, "error", None)
                response.failure(_failure(response.status_code, response.content, error))
                return
            try:
                count = answered(orjson.loads(response.content or b""))
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
                response.failure(f"unexpected answer: {type(exc).__name__}: {exc}")
                return
            if count != sent:
                response.failure(f"{count} answers for {sent} items")

    def send_files(self, path: str, uploads: list[Upload], name: str | None = None) -> None:
        body, content_type = multipart(uploads)
        self.send(path, body, len(uploads), _predictions, content_type=content_type, name=name)


def _predictions(answer: Any) -> int:
    return len(answer["predictions"])


def _v2_rows(answer: Any) -> int:
    return int(answer["outputs"][0]["shape"][0])


def _per_model(
    protocol: str, models: Sequence[str], send: Callable[[Any, str], None]
) -> list[TaskSet | Callable[..., Any]]:  # the type of User.tasks
    """A task per model, `send(user, model)`, tagged with the model and the protocol (what
    --tags and --exclude-tags select)."""

    def task_for(model: str) -> Callable[[Any], None]:
        @tag(model, protocol)
        def run(user: Any) -> None:
            send(user, model)

        run.__name__ = run.__qualname__ = model  # Locust names a task after its function
        return run

    return [task_for(model) for model in models]


class TFServingUser(ModelServeUser):
    """TF Serving's REST predict, row format, on every model."""

    weight = 3

    def predict(self, model: str) -> None:
        count = _items()
        body = _bodies().tfserving(model, count)
        self.send(f"/v1/models/{model}:predict", body, count, _predictions)

    tasks = _per_model("tfserving", MODELS, predict)


class V2User(ModelServeUser):
    """Open Inference Protocol (V2) infer on the models with JSON-friendly inputs."""

    weight = 2

    def infer(self, model: str) -> None:
        count = _items()
        self.send(f"/v2/models/{model}/infer", _bodies().v2(model, count), count, _v2_rows)

    tasks = _per_model("v2", ("digits", "sentiment", "votes"), infer)


class DigitUploadUser(ModelServeUser):
    """Photos of handwritten digits (PNG, 28-140 px, dark on light) to the task API."""

    weight = 2

    @tag("digits", "task")
    @task
    def upload(self) -> None:
        self.send_files("/api/v1/digits", _bodies().digit_uploads(_items()))


class ImageUploadUser(ModelServeUser):
    """Photos (JPEG/PNG/WebP, up to megapixels) to resnet50 through the task API."""

    weight = 1

    @tag("resnet50", "task")
    @task
    def upload(self) -> None:
        uploads = _bodies().photo_uploads(_items())
        top_k = random.choice([1, 5, 10])
        self.send_files(f"/api/v1/images?top_k={top_k}", uploads, name="/api/v1/images")


class SentimentUser(ModelServeUser):
    """IMDB reviews, raw text, to the task API."""

    weight = 2

    @tag("sentiment", "task")
    @task
    def classify(self) -> None:
        count = _items()
        self.send("/api/v1/sentiment", _bodies().sentiment_task(count), count, _predictions)


class PartyUser(ModelServeUser):
    """Congressional voting records by bill name to the task API."""

    weight = 1

    @tag("votes", "task")
    @task
    def classify(self) -> None:
        count = _items()
        self.send("/api/v1/party", _bodies().party_task(count), count, _predictions)
