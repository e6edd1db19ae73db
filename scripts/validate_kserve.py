"""Validate rendered KServe objects (ServingRuntime, InferenceService, ...) strictly against the
KServe SDK's generated OpenAPI model classes, and the `kubernetes` package's for the built-in
types they embed (containers, probes, volumes, object metadata).

kubernetes-validate has no schemas for custom resources, and KServe's CRD YAML is not vendored
here: the schemas are the SDK's classes, which are generated from KServe's own OpenAPI spec.
Every key must be a field of its class (JSON name), every value of the declared type, and
fields the classes mark required must be present. Runs in the KServe venv
(scripts/kserve-venv.sh), which scripts/check-k8s.sh and tests/test_k8s.py use:
    .venv-kserve/bin/python scripts/validate_kserve.py rendered.yaml [more.yaml | -]
Prints one line per object and one per error (`Kind/name: path: problem`); exits 1 on errors.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import re
import sys
import typing
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from kserve import models
from kserve.configuration import Configuration

LIST = re.compile(r"^[Ll]ist\[(.+)\]$")
DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")
# The SDK names some embedded Kubernetes types by their Go package: K8sIoApiAppsV1DeploymentStrategy
# is the kubernetes package's V1DeploymentStrategy.
GO_PACKAGE_NAME = re.compile(r"^K8sIoApi[A-Z][a-z]+(V\d+(?:alpha\d+|beta\d+)?[A-Z]\w*)$")
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    # KServe declares resource quantities (overhead) so; the API accepts 2 as well as "2".
    "ResourceQuantity": (int, str),
}


def schema_class(type_name: str) -> type | None:
    """The KServe class of that name, else the kubernetes package's."""
    match = GO_PACKAGE_NAME.match(type_name)
    name = match[1] if match else type_name
    return getattr(models, name, None) or getattr(kubernetes.client, name, None)


@functools.cache
def required_fields(cls: type) -> frozenset[str]:
    """Attributes the class requires: the kubernetes package's classes are pydantic models; the
    KServe SDK's setters raise ValueError for None on a required field."""
    if hasattr(cls, "model_fields"):
        return frozenset(name for name, f in cls.model_fields.items() if f.is_required())
    required = set()
    for attr in cls.openapi_types:
        blank = cls.__new__(cls)
        blank.local_vars_configuration = Configuration()  # client_side_validation is on
        try:
            setattr(blank, attr, None)
        except ValueError:
            required.add(attr)
    return frozenset(required)


def leaf_types(annotation: Any) -> set[Any]:
    """The plain types a (possibly Optional/Union/Annotated) annotation accepts."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        return leaf_types(args[0])
    if args:
        return set().union(*(leaf_types(arg) for arg in args))
    return {annotation}


def is_int_or_string(cls: type, attr: str) -> bool:
    """`object` in the generated types is either free-form or Kubernetes' IntOrString; the
    kubernetes package's pydantic annotation tells which."""
    field = getattr(cls, "model_fields", {}).get(attr)
    return field is not None and {int, str} <= leaf_types(field.annotation)


def kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class Validator:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, problem: str) -> None:
        self.errors.append(f"{path or '(root)'}: {problem}")

    def check(self, value: Any, type_name: str, path: str, int_or_string: bool = False) -> None:
        if (match := LIST.match(type_name)) is not None:
            if not isinstance(value, list):
                return self.error(path, f"expected a list, got {kind_of(value)}")
            for i, item in enumerate(value):
                self.check(item, match[1], f"{path}[{i}]")
        elif (match := DICT.match(type_name)) is not None:
            if not isinstance(value, dict):
                return self.error(path, f"expected a map, got {kind_of(value)}")
            for key, item in value.items():
                if not isinstance(key, str):
                    self.error(f"{path}[{key!r}]", f"map key must be a string, got {kind_of(key)}")
                self.check(item, match[1] or match[2], f"{path}[{key}]")
        elif type_name == "object":
            if int_or_string and (isinstance(value, bool) or not isinstance(value, (int, str))):
                self.error(path, f"expected an int or a string, got {kind_of(value)}")
        elif type_name in ("datetime", "date"):
            self.check_time(value, type_name, path)
        elif type_name in PRIMITIVES:
            allowed = PRIMITIVES[type_name]
            # bool is an int in Python, never in the API
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                self.error(path, f"expected {type_name}, got {kind_of(value)} ({value!r})")
        elif (cls := schema_class(type_name)) is not None:
            self.check_object(value, cls, path)
        else:
            self.error(path, f"no schema for type {type_name} in the KServe SDK or kubernetes")

    def check_time(self, value: Any, type_name: str, path: str) -> None:
        if isinstance(value, datetime.date):  # a datetime too: PyYAML parsed a timestamp
            return
        parse = datetime.datetime if type_name == "datetime" else datetime.date
        try:
            parse.fromisoformat(value)
        except (TypeError, ValueError):
            self.error(path, f"expected an RFC 3339 {type_name}, got {value!r}")

    def check_object(self, value: Any, cls: type, path: str) -> None:
        if not isinstance(value, dict):
            return self.error(path, f"expected an object ({cls.__name__}), got {kind_of(value)}")
        by_json_name = {json: attr for attr, json in cls.attribute_map.items()}
        prefix = f"{path}." if path else ""
        for key, item in value.items():
            attr = by_json_name.get(key)
            if attr is None:
                close = difflib.get_close_matches(str(key), by_json_name, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.error(f"{prefix}{key}", f"unknown field of {cls.__name__}{hint}")
                continue
            type_name = cls.openapi_types[attr]
            self.check(item, type_name, f"{prefix}{key}", is_int_or_string(cls, attr))
        for attr in sorted(required_fields(cls)):
            if cls.attribute_map[attr] not in value:
                self.error(f"{prefix}{cls.attribute_map[attr]}", "missing required field")


def document_class(doc: dict[str, Any]) -> type | None:
    """serving.kserve.io/v1alpha1 ServingRuntime -> V1alpha1ServingRuntime."""
    group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
    if group != "serving.kserve.io" or not version:
        return None
    return getattr(models, f"{version[:1].upper()}{version[1:]}{doc.get('kind', '')}", None)


def validate(doc: Any) -> tuple[str, list[str]]:
    """(Kind/name, errors) of one rendered document."""
    if not isinstance(doc, dict):
        return "(document)", [f"expected an object, got {kind_of(doc)}"]
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    cls = document_class(doc)
    if cls is None:
        return name, [f"no KServe SDK class for apiVersion {doc.get('apiVersion')!r}"]
    validator = Validator()
    validator.check_object(doc, cls, "")
    return name, validator.errors


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        docs = list(yaml.safe_load_all(text))
        for doc in (d for d in docs if d is not None):
            name, errors = validate(doc)
            failed |= bool(errors)
            for problem in errors:
                print(f"{name}: {problem}")
            if not errors:
                print(f"{name}: valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
