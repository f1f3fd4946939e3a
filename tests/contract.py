"""Validate JSON bodies against the OpenAPI contracts in ``resources/contracts``.

``validate(body, "HardwareStats")`` checks ``body`` against
``#/components/schemas/HardwareStats`` of the runner contract; pass
``contract="ai-gateway-openapi.yaml"`` for the gateway's. The whole document is registered as
one JSON Schema 2020-12 resource (OpenAPI 3.1 schemas are that dialect), so ``$ref`` into
components, ``anyOf``, ``oneOf``, ``allOf`` and ``additionalProperties`` resolve as written.
``format`` is not asserted (``format: binary`` marks file uploads).

Validate what goes on the wire: a Python dict with ``int`` keys passes ``additionalProperties``
here and becomes string keys in JSON, so round-trip through ``json`` first when that matters.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACTS = Path(__file__).resolve().parent.parent / "resources" / "contracts"
RUNNER = "ai-runner-openapi.yaml"


@cache
def _registry(contract: str) -> tuple[str, Registry[Any], dict[str, Any]]:
    document = yaml.safe_load((CONTRACTS / contract).read_text())
    uri = f"urn:orchard:contract:{contract}"
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return uri, Registry().with_resource(uri, resource), document["components"]["schemas"]


def schema_names(contract: str = RUNNER) -> list[str]:
    """The names under ``#/components/schemas`` of ``contract``."""
    return sorted(_registry(contract)[2])


@cache
def validator(schema_name: str, contract: str = RUNNER) -> Draft202012Validator:
    """A validator for one component schema, with refs resolved inside the contract."""
    uri, registry, schemas = _registry(contract)
    if schema_name not in schemas:
        raise KeyError(f"{contract} has no schema {schema_name!r}")
    schema = {"$ref": f"{uri}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=registry)


def errors(instance: Any, schema_name: str, contract: str = RUNNER) -> list[str]:
    """Every violation, as ``path: message`` lines; empty when ``instance`` conforms."""
    found = validator(schema_name, contract).iter_errors(instance)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def validate(instance: Any, schema_name: str, contract: str = RUNNER) -> None:
    """Raise ``AssertionError`` listing every violation of ``schema_name`` by ``instance``."""
    problems = errors(instance, schema_name, contract)
    if problems:
        raise AssertionError(f"not a valid {schema_name}:\n  " + "\n  ".join(problems))
