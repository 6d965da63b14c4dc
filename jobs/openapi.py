"""The OpenAPI 3.1 document, generated from the same parameter models that validate input."""

from __future__ import annotations

from typing import Any

from .kinds.registry import JobKind


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema_ref: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
COMMON = {"401": _error_response("Not authenticated"), "404": _error_response("No such job (or not yours)")}


def openapi_schema(*, kinds: list[JobKind]) -> dict[str, Any]:
    params_schemas: dict[str, Any] = {}
    create_variants = []
    for kind in kinds:
        name = f"Params_{kind.name}"
        schema = kind.params_schema()
        defs = schema.pop("$defs", {})
        params_schemas.update(defs)
        params_schemas[name] = schema
        create_variants.append(
            {
                "type": "object",
                "title": kind.title,
                "required": ["kind"],
                "properties": {
                    "kind": {"const": kind.name},
                    "params": {"$ref": f"#/components/schemas/{name}"},
                },
            }
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Runboard API", "version": "1"},
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A personal access token (rb_...).",
                },
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
            "schemas": {
                **params_schemas,
                "Error": {
                    "type": "object",
                    "required": ["detail"],
                    "properties": {
                        "detail": {"type": "string"},
                        "fields": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
                "Job": {
                    "type": "object",
                    "description": (
                        "At most 4 KiB of JSON, whatever the job holds: long fields are cut (named in "
                        "`truncated`) and the result is only summarized; `result_url` serves it whole."
                    ),
                    "required": ["id", "kind", "state", "progress", "version"],
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "kind": {"type": "string"},
                        "kind_title": {"type": "string"},
                        "state": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                        "cancel_requested": {"type": "boolean"},
                        "waiting_for_queue": {
                            "type": "boolean",
                            "description": "Queued, but the job queue could not be reached yet: "
                            "it is sent when the queue is back.",
                        },
                        "params": {"type": "object"},
                        "progress": {
                            "type": "object",
                            "properties": {
                                "current": {"type": "integer"},
                                "total": {"type": ["integer", "null"]},
                                "message": {"type": "string"},
                            },
                        },
                        "rate": {
                            "type": ["number", "null"],
                            "description": "Items per second since the start.",
                        },
                        "eta_seconds": {"type": ["number", "null"]},
                        "version": {
                            "type": "integer",
                            "description": "Grows with every change; apply only newer.",
                        },
                        "created_at": {"type": "string", "format": "date-time"},
                        "started_at": {"type": ["string", "null"], "format": "date-time"},
                        "finished_at": {"type": ["string", "null"], "format": "date-time"},
                        "queue_wait_seconds": {"type": ["number", "null"]},
                        "error": {
                            "type": "string",
                            "description": "At most 640 bytes; all of it at result_url.",
                        },
                        "result_summary": {
                            "description": "At most 768 bytes: the kind's summary of the result, "
                            "or its start; null without a result."
                        },
                        "result_complete": {
                            "type": "boolean",
                            "description": "result_summary is the whole result.",
                        },
                        "result_bytes": {
                            "type": ["integer", "null"],
                            "description": "Size of the whole result (compact UTF-8 JSON).",
                        },
                        "result_url": {
                            "type": ["string", "null"],
                            "description": "GET: the whole result and error (JobResult).",
                        },
                        "download_url": {"type": ["string", "null"]},
                        "retry_of": {"type": ["string", "null"], "format": "uuid"},
                        "timeline": {"type": "array", "items": {"type": "object"}},
                        "truncated": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Fields cut to fit the bound (params, error, progress, ...).",
                        },
                    },
                },
                "JobResult": {
                    "type": "object",
                    "required": ["id", "state", "result", "error", "page", "next"],
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "state": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
                        "result": {
                            "description": "The whole result (one page of it with `limit`); null if none."
                        },
                        "result_bytes": {"type": ["integer", "null"]},
                        "error": {"type": "string"},
                        "page": {
                            "type": ["object", "null"],
                            "properties": {
                                "key": {"type": "string"},
                                "offset": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "total": {"type": "integer"},
                            },
                        },
                        "next": {"type": ["string", "null"]},
                    },
                },
                "JobCreate": {"oneOf": create_variants},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/v1/kinds/": {
                "get": {
                    "summary": "Job kinds you may launch, with their parameter JSON Schema",
                    "responses": {"200": {"description": "OK"}, **COMMON},
                }
            },
            "/api/v1/jobs/": {
                "get": {
                    "summary": "Your jobs, newest first (a page is at most 256 KiB: it may end early)",
                    "parameters": [
                        {"name": "state", "in": "query", "schema": {"type": "string"}},
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                        {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "Search"},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                        },
                    ],
                    "responses": {
                        "200": {"description": "`results` and a `next` URL (null on the last page)"},
                        "400": _error_response("Bad filter or cursor"),
                        **COMMON,
                    },
                },
                "post": {
                    "summary": "Launch a job (JSON, or multipart: `kind`, `params` as JSON text, `file`)",
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"type": "string"},
                                        "params": {"type": "string"},
                                        "file": {"type": "string", "format": "binary"},
                                    },
                                }
                            },
                        }
                    },
                    "responses": {
                        "201": _ok("#/components/schemas/Job", "Created (queued)"),
                        "400": _error_response("Invalid kind or parameters (per-field errors)"),
                        "403": _error_response("Admin-only kind, or CSRF check failed"),
                        "413": _error_response("Upload too large"),
                        "429": _error_response("Launch rate limit; see Retry-After"),
                        "401": COMMON["401"],
                    },
                },
            },
            "/api/v1/jobs/{job_id}/": {
                "get": {
                    "parameters": [JOB_ID],
                    "summary": "One of your jobs",
                    "responses": {"200": _ok("#/components/schemas/Job"), **COMMON},
                }
            },
            "/api/v1/jobs/{job_id}/cancel/": {
                "post": {
                    "parameters": [JOB_ID],
                    "summary": "Cancel (queued: at once; running: cooperatively)",
                    "responses": {
                        "200": _ok("#/components/schemas/Job"),
                        "409": _error_response("Already finished"),
                        **COMMON,
                    },
                }
            },
            "/api/v1/jobs/{job_id}/retry/": {
                "post": {
                    "parameters": [JOB_ID],
                    "summary": 'Retry a finished job, or re-run it with {"params": {...}}',
                    "responses": {
                        "201": _ok("#/components/schemas/Job", "The new job"),
                        "400": _error_response("Invalid parameters"),
                        "409": _error_response("Not finished"),
                        **COMMON,
                    },
                }
            },
            "/api/v1/jobs/{job_id}/log/": {
                "get": {
                    "parameters": [
                        JOB_ID,
                        {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "summary": "The job's log lines after a sequence number (the newest 1,000 are kept)",
                    "responses": {"200": {"description": "`lines`: [{seq, text}]"}, **COMMON},
                }
            },
            "/api/v1/jobs/{job_id}/result/": {
                "get": {
                    "parameters": [
                        JOB_ID,
                        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                            "description": "Page the kind's list (csv_profile: `columns`)",
                        },
                    ],
                    "summary": "The job's whole result and error, by reference (owner or staff)",
                    "responses": {
                        "200": _ok("#/components/schemas/JobResult"),
                        "400": _error_response("Bad offset or limit"),
                        **COMMON,
                    },
                }
            },
            "/api/v1/jobs/{job_id}/download/": {
                "get": {
                    "parameters": [JOB_ID],
                    "summary": "The file the job produced (owner only)",
                    "responses": {"200": {"description": "The file"}, **COMMON},
                }
            },
        },
    }
