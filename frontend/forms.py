"""Launch forms generated from each kind's parameter JSON Schema (a kind gets its form for free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobs.kinds.registry import JobKind

_INPUT_TYPES = {
    "integer": "number",
    "number": "number",
    "string": "text",
    "boolean": "checkbox",
    "upload": "file",
}


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    help: str
    input_type: str
    json_type: str
    required: bool
    default: Any
    minimum: Any
    maximum: Any
    step: str
    choices: list[str]
    accept: str
    value: Any = None


def _field_type(schema: dict[str, Any]) -> str:
    """The JSON type of a property; an optional one (``int | None``) is an anyOf with null."""
    if "anyOf" in schema:
        concrete = [
            option.get("type") for option in schema["anyOf"] if option.get("type") not in (None, "null")
        ]
        return concrete[0] if concrete else "string"
    return schema.get("type", "string")


def form_fields(kind: JobKind, values: dict[str, Any] | None = None) -> list[FormField]:
    """The kind's parameters as form fields; ``values`` pre-fills them (re-run with edits)."""
    values = values or {}
    schema = kind.params_schema()
    required = set(schema.get("required", []))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        json_type = "upload" if prop.get("format") == "upload" else _field_type(prop)
        options = next((o for o in prop.get("anyOf", []) if o.get("type") == json_type), prop)
        fields.append(
            FormField(
                name=name,
                label=prop.get("title", name),
                help=prop.get("description", ""),
                input_type=_INPUT_TYPES.get(json_type, "text"),
                json_type=json_type,
                required=name in required,
                default=prop.get("default"),
                minimum=options.get("minimum"),
                maximum=options.get("maximum"),
                step="1" if json_type == "integer" else "any",
                choices=[str(choice) for choice in options.get("enum", [])],
                accept=prop.get("accept", ""),
                value=values.get(name, prop.get("default")),
            )
        )
    return fields
