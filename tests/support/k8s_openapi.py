"""Strict validation of Kubernetes objects against the vendored OpenAPI v3 documents.

The documents are the official Kubernetes 1.35 OpenAPI v3 specs in ``tests/data/k8s-openapi`` (copied
from the project's shared material; see its README.md). Usage from a test::

    from tests.support.k8s_openapi import default_schemas

    default_schemas().validate(pod, "io.k8s.api.core.v1.Pod")   # raises K8sValidationError
    assert default_schemas().errors(bad_pod, "io.k8s.api.core.v1.Pod") == [...]
    default_schemas().validate_resource(deployment)              # schema picked from apiVersion/kind

The OpenAPI schemas are converted to JSON Schema draft 2020-12 once per `K8sSchemas` instance:

* ``$ref: "#/components/schemas/X"`` becomes ``#/$defs/X`` of one combined schema document, so the
  ``allOf: [{$ref}]`` wrappers Kubernetes puts around described/defaulted fields simply work.
* **Strictness**: every schema that declares ``properties`` and no ``additionalProperties`` gets
  ``additionalProperties: false``, so unknown or misspelt fields are errors. Schemas marked
  ``x-kubernetes-preserve-unknown-fields: true`` stay open, maps (``additionalProperties: {...}``)
  stay maps, and free-form objects without ``properties`` (RawExtension, FieldsV1) stay free-form.
  ``x-kubernetes-embedded-resource: true`` objects also accept ``apiVersion``/``kind``/``metadata``.
* ``x-kubernetes-int-or-string: true`` accepts an integer or a string; ``nullable: true`` accepts null.
* ``kind``/``apiVersion``, when present, must match the schema's ``x-kubernetes-group-version-kind``
  (a Pod may say ``apiVersion: v1, kind: Pod`` but not ``kind: Deployment``).
* ``Quantity`` strings must parse as a Kubernetes quantity (``"2"``, ``"500m"``, ``"64Gi"``), as the API
  server's decoder requires; ``IntOrString`` is ``oneOf [integer, string]`` as in the spec.
* Formats checked: ``int32``/``int64`` (range), ``byte`` (base64), ``date-time`` (RFC 3339, as Go's
  ``time.RFC3339`` parses it). Other formats (``double``, ``int-or-string``, ...) are not asserted.
  ``default`` values, ``readOnly`` and the other ``x-kubernetes-*`` annotations are ignored.

Real objects carry ``null`` where Go has a zero value (``lastProbeTime: null``) and the documents do not
mark those fields nullable, so `K8sSchemas.validate` drops null-valued keys first (`drop_nulls`).
String enums are only described in prose upstream, so wrong enum values are *not* caught.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker

from tests.support.data import K8S_OPENAPI, REPO

__all__ = [
    "K8sSchemas",
    "K8sValidationError",
    "default_schemas",
    "drop_nulls",
    "format_path",
    "repo_root",
]

JSON = Any
Schema = dict[str, Any]
PathItem = str | int

_REF_PREFIX: Final = "#/components/schemas/"
_DEFS_PREFIX: Final = "#/$defs/"

# The API server's Quantity grammar (k8s.io/apimachinery/pkg/api/resource/quantity.go); the same
# pattern controller-gen emits for resource.Quantity fields in CRDs.
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_SCHEMA: Final = "io.k8s.apimachinery.pkg.api.resource.Quantity"

# Go's time.RFC3339 layout as time.Parse accepts it (upper-case T and Z, optional fraction).
_RFC3339: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Keywords whose value is a single subschema / a list of subschemas / a map of subschemas. Only these
# are walked when converting: `default`, `example`, `enum` values are data, not schemas.
_SCHEMA_KEYWORDS: Final = ("items", "not", "additionalItems")
_SCHEMA_LIST_KEYWORDS: Final = ("allOf", "anyOf", "oneOf")
_SCHEMA_MAP_KEYWORDS: Final = ("properties", "patternProperties")


# --------------------------------------------------------------------------------------------- paths


def repo_root() -> Path:
    """The repository root (this file is ``<repo>/tests/support/k8s_openapi.py``)."""
    return REPO


# ------------------------------------------------------------------------------------------- helpers


def drop_nulls(obj: JSON) -> JSON:
    """Return a copy of `obj` without null-valued dict keys, recursively.

    List items are kept as they are (a ``null`` list item stays and is validated), except that
    dicts inside lists are cleaned too. The input is not modified.
    """
    if isinstance(obj, dict):
        return {key: drop_nulls(value) for key, value in obj.items() if value is not None}
    if isinstance(obj, list):
        return [drop_nulls(item) if isinstance(item, dict | list) else item for item in obj]
    return obj


def format_path(path: Iterable[PathItem]) -> str:
    """Format an instance path as a JSONPath: ``$.spec.containers[0].resources.limits['nvidia.com/gpu']``."""
    out = "$"
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
        elif _IDENTIFIER.match(item):
            out += f".{item}"
        else:
            out += "[" + json.dumps(item).replace('"', "'") + "]"
    return out


def _path_sort_key(path: Sequence[PathItem]) -> tuple[tuple[int, int, str], ...]:
    return tuple((1, 0, item) if isinstance(item, str) else (0, item, "") for item in path)


class K8sValidationError(AssertionError):
    """An object did not validate against a Kubernetes schema. `errors` lists every problem."""

    def __init__(self, schema_name: str, errors: list[str]) -> None:
        self.schema_name = schema_name
        self.errors = errors
        lines = "\n".join(f"  {error}" for error in errors)
        super().__init__(f"object is not a valid {schema_name} ({len(errors)} error(s)):\n{lines}")


# ------------------------------------------------------------------------------------------- formats


def _int_in_range(instance: object, bits: int) -> bool:
    """False only for an integral number outside the signed `bits` range; other values are not ours."""
    if isinstance(instance, bool) or not isinstance(instance, int | float):
        return True
    if isinstance(instance, float) and not instance.is_integer():
        return True  # not an integer at all: `type: integer` reports that
    limit = 1 << (bits - 1)
    return -limit <= int(instance) < limit


def _make_format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())

    @checker.checks("int32")
    def _int32(instance: object) -> bool:
        return _int_in_range(instance, 32)

    @checker.checks("int64")
    def _int64(instance: object) -> bool:
        return _int_in_range(instance, 64)

    @checker.checks("byte", raises=binascii.Error)
    def _byte(instance: object) -> bool:
        if isinstance(instance, str):
            base64.b64decode(instance, validate=True)
        return True

    @checker.checks("date-time", raises=ValueError)
    def _date_time(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        if not _RFC3339.match(instance):
            raise ValueError("not an RFC 3339 date-time (like 2025-06-12T09:14:03Z)")
        dt.datetime.fromisoformat(instance)
        return True

    return checker


# ---------------------------------------------------------------------------------------- conversion


def _rewrite_ref(ref: str) -> str:
    if not ref.startswith(_REF_PREFIX):
        raise ValueError(f"unsupported $ref {ref!r}: only {_REF_PREFIX}... references are expected")
    return _DEFS_PREFIX + ref.removeprefix(_REF_PREFIX)


def _convert(schema: JSON) -> JSON:
    """Convert one OpenAPI v3.0 (Kubernetes flavour) schema to a strict draft 2020-12 schema."""
    if not isinstance(schema, dict):
        return schema  # boolean schemas
    out: Schema = {}
    for key, value in schema.items():
        if key == "$ref":
            out[key] = _rewrite_ref(value)
        elif key in _SCHEMA_KEYWORDS:
            out[key] = _convert(value)
        elif key in _SCHEMA_LIST_KEYWORDS:
            out[key] = [_convert(sub) for sub in value]
        elif key in _SCHEMA_MAP_KEYWORDS:
            out[key] = {name: _convert(sub) for name, sub in value.items()}
        elif key == "additionalProperties":
            out[key] = _convert(value)
        elif key in ("description", "nullable", "x-kubernetes-int-or-string"):
            continue  # descriptions are long and useless in error output; the others are handled below
        else:
            out[key] = value  # data (default, enum, example) and annotations, verbatim

    # OpenAPI 3.0 boolean exclusiveMinimum/Maximum -> draft 2020-12 numbers.
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        flag = out.get(exclusive)
        if isinstance(flag, bool):
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)

    preserve_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if schema.get("x-kubernetes-embedded-resource") is True and "properties" in out:
        for name, sub in (
            ("apiVersion", {"type": "string"}),
            ("kind", {"type": "string"}),
            ("metadata", {"type": "object"}),
        ):
            out["properties"].setdefault(name, sub)
    if "properties" in out and "additionalProperties" not in out and not preserve_unknown:
        out["additionalProperties"] = False

    if schema.get("x-kubernetes-int-or-string") is True:
        out.pop("type", None)
        int_or_string = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
        out = {"allOf": [out, int_or_string]} if "anyOf" in out else {**out, **int_or_string}
    if schema.get("nullable") is True:
        out = {"anyOf": [{"type": "null"}, out]}
    return out


def _convert_definition(name: str, schema: Schema) -> Schema:
    out: Schema = _convert(schema)
    if name == _QUANTITY_SCHEMA:  # upstream: oneOf [string, number]; the string must also parse
        out = {"oneOf": [{"type": "string", "pattern": QUANTITY_PATTERN}, {"type": "number"}]}
    gvks = schema.get("x-kubernetes-group-version-kind")
    properties = out.get("properties")
    if gvks and isinstance(properties, dict):
        api_versions = sorted({f"{g['group']}/{g['version']}" if g["group"] else g["version"] for g in gvks})
        kinds = sorted({g["kind"] for g in gvks})
        if "apiVersion" in properties:
            properties["apiVersion"] = {**properties["apiVersion"], "enum": api_versions}
        if "kind" in properties:
            properties["kind"] = {**properties["kind"], "enum": kinds}
    return out


# -------------------------------------------------------------------------------------------- schemas


class K8sSchemas:
    """Component schemas from one or more Kubernetes OpenAPI v3 documents, as strict validators.

    The documents are read on first use and their ``components.schemas`` merged (names are unique
    across the upstream documents; on a duplicate the first document wins, and a duplicate whose
    content differs is recorded in `duplicate_conflicts`). Validators are built once per schema name.
    """

    def __init__(self, documents: Iterable[Path | str]) -> None:
        self.documents: tuple[Path, ...] = tuple(Path(doc) for doc in documents)
        if not self.documents:
            raise ValueError("K8sSchemas needs at least one OpenAPI document")
        self._format_checker = _make_format_checker()
        self._validators: dict[str, Draft202012Validator] = {}

    @classmethod
    def from_directory(cls, directory: Path | str) -> K8sSchemas:
        """All ``*_openapi.json`` documents in `directory` (sorted by name, so ``api__v1`` comes first)."""
        directory = Path(directory)
        documents = sorted(directory.glob("*openapi.json"))
        if not documents:
            raise FileNotFoundError(f"no Kubernetes OpenAPI v3 documents (*openapi.json) in {directory}")
        return cls(documents)

    @classmethod
    def from_repository(cls) -> K8sSchemas:
        """The vendored Kubernetes 1.35 documents in ``tests/data/k8s-openapi``."""
        return cls.from_directory(K8S_OPENAPI)

    # -- loading -------------------------------------------------------------------------------------

    @functools.cached_property
    def _loaded(self) -> tuple[dict[str, Schema], dict[str, Path], list[str]]:
        schemas: dict[str, Schema] = {}
        origin: dict[str, Path] = {}
        conflicts: list[str] = []
        for document in self.documents:
            with document.open(encoding="utf-8") as f:
                spec = json.load(f)
            for name, schema in spec.get("components", {}).get("schemas", {}).items():
                if name not in schemas:
                    schemas[name] = schema
                    origin[name] = document
                elif schemas[name] != schema:
                    conflicts.append(f"{name}: {origin[name].name} != {document.name}")
        return schemas, origin, conflicts

    @property
    def duplicate_conflicts(self) -> list[str]:
        """Schema names defined differently by two documents (the first document's version is used)."""
        return self._loaded[2]

    @property
    def raw_schemas(self) -> Mapping[str, Schema]:
        """The merged ``components.schemas``, unconverted, as the documents have them."""
        return self._loaded[0]

    @functools.cached_property
    def _defs(self) -> dict[str, Schema]:
        return {name: _convert_definition(name, schema) for name, schema in self.raw_schemas.items()}

    @functools.cached_property
    def _def_names(self) -> dict[int, str]:
        """id() of each converted definition -> its name, to say which type an unknown field is not in."""
        return {id(schema): name for name, schema in self._defs.items()}

    @functools.cached_property
    def _gvk_index(self) -> dict[tuple[str, str], str]:
        index: dict[tuple[str, str], str] = {}
        for name, schema in self.raw_schemas.items():
            gvks = schema.get("x-kubernetes-group-version-kind", [])
            if len(gvks) != 1:
                continue  # meta types (DeleteOptions, WatchEvent) registered in every group
            gvk = gvks[0]
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            index.setdefault((api_version, gvk["kind"]), name)
        return index

    def names(self) -> list[str]:
        """Every schema name (``io.k8s.api.core.v1.Pod``, ...), sorted."""
        return sorted(self.raw_schemas)

    def find_document_for(self, schema_name: str) -> Path:
        """The document that defines `schema_name` (the first one, if several do)."""
        self._require(schema_name)
        return self._loaded[1][schema_name]

    def schema_name_for(self, api_version: str, kind: str) -> str:
        """The schema for an ``apiVersion``/``kind`` pair, e.g. ``("apps/v1", "Deployment")``."""
        try:
            return self._gvk_index[(api_version, kind)]
        except KeyError:
            raise KeyError(
                f"no schema for apiVersion={api_version!r} kind={kind!r} in "
                f"{[doc.name for doc in self.documents]}"
            ) from None

    def json_schema(self, schema_name: str) -> Schema:
        """A self-contained draft 2020-12 schema for `schema_name` (all definitions under ``$defs``)."""
        self._require(schema_name)
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": self._defs,
            "$ref": _DEFS_PREFIX + schema_name,
        }

    def _require(self, schema_name: str) -> None:
        if schema_name not in self.raw_schemas:
            short = schema_name.rsplit(".", 1)[-1]
            close = [name for name in self.raw_schemas if name.rsplit(".", 1)[-1] == short]
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"unknown schema {schema_name!r}{hint}")

    # -- validation ----------------------------------------------------------------------------------

    def validator(self, schema_name: str) -> Draft202012Validator:
        """The jsonschema validator for `schema_name`, built on first use and then reused."""
        validator = self._validators.get(schema_name)
        if validator is None:
            validator = Draft202012Validator(
                self.json_schema(schema_name), format_checker=self._format_checker
            )
            self._validators[schema_name] = validator
        return validator

    def iter_errors(
        self, obj: JSON, schema_name: str, *, drop_null_values: bool = True
    ) -> Iterator[jsonschema.ValidationError]:
        """The raw jsonschema errors (unsorted). `errors` is usually what a test wants."""
        instance = drop_nulls(obj) if drop_null_values else obj
        return self.validator(schema_name).iter_errors(instance)

    def errors(self, obj: JSON, schema_name: str, *, drop_null_values: bool = True) -> list[str]:
        """Every validation error as ``"<JSONPath>: <message>"``, sorted by path; ``[]`` if valid.

        An unknown field is reported at its own path:
        ``$.spec.containers[0].resourcez: unknown field (not in io.k8s.api.core.v1.Container)``.
        """
        found: list[tuple[tuple[tuple[int, int, str], ...], str]] = []
        for error in self.iter_errors(obj, schema_name, drop_null_values=drop_null_values):
            for path, message in self._describe(error):
                found.append((_path_sort_key(path), f"{format_path(path)}: {message}"))
        return [message for _, message in sorted(found)]

    def _describe(self, error: jsonschema.ValidationError) -> Iterator[tuple[list[PathItem], str]]:
        path: list[PathItem] = list(error.absolute_path)
        schema = error.schema if isinstance(error.schema, dict) else {}
        if error.validator == "additionalProperties" and schema.get("additionalProperties") is False:
            owner = self._def_names.get(id(schema))
            where = f" (not in {owner})" if owner else ""
            declared = set(schema.get("properties", {}))
            for key in sorted(key for key in error.instance if key not in declared):
                yield [*path, key], f"unknown field{where}"
            return
        if self._def_names.get(id(schema)) == _QUANTITY_SCHEMA:
            yield path, f"{error.instance!r} is not a Kubernetes quantity (like 2, '500m', '64Gi')"
            return
        message = error.message
        instance = repr(error.instance)
        if len(instance) > 80 and message.startswith(instance):  # keep the *reason* readable
            message = instance[:60] + " ..." + instance[-1] + message[len(instance) :]
        if error.context:  # oneOf/anyOf: say why each alternative failed
            message += " (" + "; ".join(sorted({sub.message for sub in error.context})) + ")"
        yield path, message

    def is_valid(self, obj: JSON, schema_name: str, *, drop_null_values: bool = True) -> bool:
        return not self.errors(obj, schema_name, drop_null_values=drop_null_values)

    def validate(self, obj: JSON, schema_name: str, *, drop_null_values: bool = True) -> None:
        """Raise `K8sValidationError` (an AssertionError) listing every error unless `obj` is valid."""
        errors = self.errors(obj, schema_name, drop_null_values=drop_null_values)
        if errors:
            raise K8sValidationError(schema_name, errors)

    def validate_resource(self, obj: Mapping[str, Any], *, drop_null_values: bool = True) -> str:
        """Validate a top-level object against the schema its ``apiVersion``/``kind`` name.

        Returns the schema name used. Raises KeyError when the documents have no such kind.
        """
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            raise K8sValidationError("<resource>", ["$: apiVersion and kind must both be set to strings"])
        schema_name = self.schema_name_for(api_version, kind)
        self.validate(obj, schema_name, drop_null_values=drop_null_values)
        return schema_name


@functools.cache
def default_schemas() -> K8sSchemas:
    """One `K8sSchemas` over ``tests/data/k8s-openapi`` for the whole test session."""
    return K8sSchemas.from_repository()
