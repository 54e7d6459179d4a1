"""The registry's HTTP API (FastAPI) and the managed process that serves it.

Example::

    proc = registry_process(free_port(), "sqlite:////tmp/registry.db", Path("/tmp/registry.log")).start()
    ...
    proc.stop()
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from k2.bus.registry.store import GLOBAL, RegistryError, RegistryStore, check_level
from k2.config import HTTP_KEEP_ALIVE_SECONDS
from k2.telemetry.procs import ManagedProcess

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class _Json(JSONResponse):
    media_type = MEDIA_TYPE


def _ok(content: Any, status: int = 200) -> _Json:
    return _Json(content, status_code=status)


def _flag(request: Request, name: str) -> bool:
    """A boolean query parameter; clients send ``true``, ``True`` (Python's str(bool)) or ``1``."""
    value = request.query_params.get(name)
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no", ""):
        return False
    raise RegistryError(400, 400, f"Query parameter {name!r}: expected true or false, found {value!r}")


def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise RegistryError(
            400, 400, f"Query parameter {name!r}: expected an integer, found {value!r}"
        ) from None


def _page(items: list[Any], request: Request) -> list[Any]:
    offset = max(_int_param(request, "offset", 0), 0)
    limit = _int_param(request, "limit", -1)
    items = items[offset:]
    return items if limit < 0 else items[:limit]


def _version(value: str) -> int:
    """A path version: a positive integer, ``latest`` or ``-1`` (42202 otherwise)."""
    if value == "latest":
        return -1
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number == -1 or 1 <= number <= 2**31 - 1:
        return number
    raise RegistryError(
        422,
        42202,
        f"The specified version '{value}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"",
    )


def _schema_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise RegistryError(404, 40403, f"Schema {value} not found") from None


async def _schema_body(request: Request) -> tuple[str, str, list[dict[str, Any]]]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise RegistryError(400, 400, f"Request body: expected JSON, found invalid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise RegistryError(
            422,
            42201,
            f"Request body: expected a JSON object with a 'schema' field, found {type(body).__name__}",
        )
    text = body.get("schema")
    schema_type = body.get("schemaType") or "AVRO"
    references = body.get("references") or []
    if not isinstance(text, str):
        raise RegistryError(
            422,
            42201,
            f"Invalid schema: expected field 'schema' to be the schema as a JSON string, found {text!r}",
        )
    if not isinstance(schema_type, str) or not isinstance(references, list):
        raise RegistryError(
            422, 42201, "Invalid schema: 'schemaType' must be a string and 'references' a list"
        )
    return text, schema_type.upper(), references


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise RegistryError(400, 400, f"Request body: expected JSON, found invalid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise RegistryError(422, 422, f"Request body: expected a JSON object, found {type(body).__name__}")
    return body


# long: the registry's Confluent-compatible routes in one place, in the order Confluent documents them.
def create_app(store: RegistryStore) -> FastAPI:
    """The FastAPI app serving Confluent's REST API subset over ``store``.

    Example::

        app = create_app(RegistryStore("sqlite://"))
    """
    app = FastAPI(title="K2 schema registry", docs_url=None, redoc_url=None, openapi_url=None)
    stats = {"requests": 0, "errors": 0, "seconds": 0.0}

    @app.exception_handler(RegistryError)
    async def registry_error(_: Request, exc: RegistryError) -> Response:
        return _ok({"error_code": exc.error_code, "message": exc.message}, exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _ok({"error_code": exc.status_code, "message": str(exc.detail)}, exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        # e.g. the database went away; the traceback still goes to the log.
        return _ok(
            {"error_code": 50001, "message": f"Error in the backend data store: {type(exc).__name__}: {exc}"},
            500,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _ok({"error_code": 422, "message": str(exc.errors())}, 422)

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        stats["requests"] += 1
        stats["errors"] += response.status_code >= 400
        stats["seconds"] += time.perf_counter() - started
        return response

    @app.get("/")
    def root() -> Response:
        return _ok({})

    @app.get("/metrics")
    def metrics() -> Response:
        # ops: Prometheus scrapes every K2 process (process metrics; liveness for K2TargetDown).
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/metadata/stats")
    def metadata_stats() -> Response:
        """K2 extension: request count, error count and total handling time since start."""
        return _ok({**stats, "write_retries": store.retries})

    # -- schemas ---------------------------------------------------------------------------------
    @app.get("/schemas/types")
    def schema_types() -> Response:
        return _ok(["AVRO"])

    @app.get("/schemas/ids/{schema_id}")
    def schema_by_id(schema_id: str) -> Response:
        # ?subject= only selects a context in Confluent; there is one context here, so it is ignored.
        return _ok(store.schema_by_id(_schema_id(schema_id)).body())

    @app.get("/schemas/ids/{schema_id}/schema")
    def raw_schema_by_id(schema_id: str) -> Response:
        return Response(store.schema_by_id(_schema_id(schema_id)).text, media_type=MEDIA_TYPE)

    @app.get("/schemas/guids/{guid}")
    def schema_by_guid(guid: str) -> Response:
        found = store.schema_by_guid(guid)
        return _ok({"id": found.id, "guid": found.guid, **found.body()})

    @app.get("/schemas/ids/{schema_id}/versions")
    def id_versions(schema_id: str, request: Request) -> Response:
        usages = store.id_usages(
            _schema_id(schema_id), request.query_params.get("subject"), _flag(request, "deleted")
        )
        return _ok(_page([{"subject": s, "version": v} for s, v in usages], request))

    @app.get("/schemas/ids/{schema_id}/subjects")
    def id_subjects(schema_id: str, request: Request) -> Response:
        usages = store.id_usages(
            _schema_id(schema_id), request.query_params.get("subject"), _flag(request, "deleted")
        )
        return _ok(_page(sorted({s for s, _ in usages}), request))

    # -- subjects --------------------------------------------------------------------------------
    @app.get("/subjects")
    def list_subjects(request: Request) -> Response:
        found = store.subjects(
            request.query_params.get("subjectPrefix"),
            _flag(request, "deleted"),
            _flag(request, "deleted_only"),
        )
        return _ok(_page(found, request))

    @app.get("/subjects/{subject}/versions")
    def list_versions(subject: str, request: Request) -> Response:
        found = store.subject_versions(subject, _flag(request, "deleted"))
        return _ok(_page([v.version for v in found], request))

    @app.post("/subjects/{subject}/versions")
    async def register(subject: str, request: Request) -> Response:
        text, schema_type, references = await _schema_body(request)
        normalize = _flag(request, "normalize")
        schema_id, version, guid = await _threaded(
            store.register, subject, text, schema_type, references, normalize
        )
        return _ok({"id": schema_id, "version": version, "guid": guid})

    @app.post("/subjects/{subject}")
    async def lookup(subject: str, request: Request) -> Response:
        text, schema_type, references = await _schema_body(request)
        found = await _threaded(
            store.lookup,
            subject,
            text,
            schema_type,
            references,
            _flag(request, "normalize"),
            _flag(request, "deleted"),
        )
        return _ok(found.body())

    @app.get("/subjects/{subject}/versions/{version}")
    def get_version(subject: str, version: str, request: Request) -> Response:
        return _ok(store.get_version(subject, _version(version), _flag(request, "deleted")).body())

    @app.get("/subjects/{subject}/versions/{version}/schema")
    def get_version_schema(subject: str, version: str, request: Request) -> Response:
        found = store.get_version(subject, _version(version), _flag(request, "deleted"))
        return Response(found.schema.text, media_type=MEDIA_TYPE)

    @app.get("/subjects/{subject}/versions/{version}/referencedby")
    def referenced_by(subject: str, version: str) -> Response:
        store.get_version(subject, _version(version))
        return _ok([])  # references are not supported, so nothing can refer to a version

    @app.delete("/subjects/{subject}")
    def delete_subject(subject: str, request: Request) -> Response:
        return _ok(store.delete_subject(subject, _flag(request, "permanent")))

    @app.delete("/subjects/{subject}/versions/{version}")
    def delete_version(subject: str, version: str, request: Request) -> Response:
        return _ok(store.delete_version(subject, _version(version), _flag(request, "permanent")))

    # -- compatibility ---------------------------------------------------------------------------
    async def _compatibility(subject: str, version: int | None, request: Request) -> Response:
        text, schema_type, references = await _schema_body(request)
        messages = await _threaded(store.check_against, subject, text, schema_type, references, version)
        body: dict[str, Any] = {"is_compatible": not messages}
        if _flag(request, "verbose"):
            body["messages"] = messages
        return _ok(body)

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    async def compatibility_version(subject: str, version: str, request: Request) -> Response:
        return await _compatibility(subject, _version(version), request)

    @app.post("/compatibility/subjects/{subject}/versions")
    async def compatibility_all(subject: str, request: Request) -> Response:
        return await _compatibility(subject, None, request)

    # -- config ----------------------------------------------------------------------------------
    async def _put_config(subject: str, request: Request) -> Response:
        body = await _json_object(request)
        level = body.get("compatibility", body.get("compatibilityLevel"))
        return _ok({"compatibility": store.set_compatibility(subject, check_level(level))})

    @app.get("/config")
    def get_global_config() -> Response:
        return _ok({"compatibilityLevel": store.global_compatibility()})

    @app.put("/config")
    async def put_global_config(request: Request) -> Response:
        return await _put_config(GLOBAL, request)

    @app.delete("/config")
    def delete_global_config() -> Response:
        return _ok({"compatibilityLevel": store.delete_compatibility(GLOBAL)})

    @app.get("/config/{subject}")
    def get_subject_config(subject: str, request: Request) -> Response:
        level = store.subject_compatibility(subject)
        if level is None:
            if not _flag(request, "defaultToGlobal"):
                raise RegistryError(
                    404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
                )
            level = store.global_compatibility()
        return _ok({"compatibilityLevel": level})

    @app.put("/config/{subject}")
    async def put_subject_config(subject: str, request: Request) -> Response:
        return await _put_config(subject, request)

    @app.delete("/config/{subject}")
    def delete_subject_config(subject: str) -> Response:
        if store.subject_compatibility(subject) is None:
            raise RegistryError(
                404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )
        return _ok({"compatibilityLevel": store.delete_compatibility(subject)})

    # -- mode (read-only: this registry is always READWRITE) -------------------------------------
    @app.get("/mode")
    def get_mode() -> Response:
        return _ok({"mode": "READWRITE"})

    @app.get("/mode/{subject}")
    def get_subject_mode(subject: str) -> Response:
        return _ok({"mode": "READWRITE"})

    @app.get("/contexts")
    def contexts() -> Response:
        return _ok(["."])

    return app


async def _threaded(fn: Any, *args: Any) -> Any:
    """Run blocking store work off the event loop (the store serialises its own writes)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def serve(host: str, port: int, store: RegistryStore) -> None:
    """Serve ``store`` in the foreground until SIGTERM/SIGINT, then close it.

    Example::

        serve("127.0.0.1", 8081, RegistryStore("sqlite:///registry.db"))
    """
    import uvicorn

    url = store.engine.url.render_as_string(hide_password=True)
    print(
        f"K2 schema registry on http://{host}:{port} (store {url}, global compatibility {store.global_compatibility()})",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            create_app(store), host=host, port=port, log_level="warning", access_log=False,
            timeout_keep_alive=HTTP_KEEP_ALIVE_SECONDS,
        )  # fmt: skip
    finally:
        store.close()


def registry_process(
    port: int,
    database_url: str,
    log_path: Path,
    default_compatibility: str = "BACKWARD",
    pid_path: Path | None = None,
    host: str = "127.0.0.1",
) -> ManagedProcess:
    """The registry as a managed subprocess (``python -m k2.bus.registry ...``), not yet started.

    Example::

        proc = registry_process(18081, "sqlite:////tmp/r.db", Path("/tmp/r.log")).start()
        proc.stop()
    """
    argv = [
        sys.executable, "-m", "k2.bus.registry",
        "--host", host,
        "--port", str(port),
        "--database-url", database_url,
        "--default-compatibility", default_compatibility,
    ]  # fmt: skip
    return ManagedProcess("registry", argv, port, log_path, pid_path)
