"""Zuora Reporting API dialect: OAuth client credentials plus ``/api/rest/v1/reportruns``."""

import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.simulation import Clock, Example, SandboxUpstream, TokenStore, Traceparents
from adapters.simulation.faults import FaultQueue
from adapters.zuora import ZuoraReportRun

_IN_PROGRESS = frozenset({"STARTED", "QUERYDATA", "PROCESSINGDATA"})
_AUTH_FAILED = 90000011
_NOT_FOUND = 50000040
_ALREADY_FINISHED = 50000030
_BAD_VALUE = 50000020
_ENTITY_HEADERS = frozenset({"entityid", "entityname"})
_RUNS = "/api/rest/v1/reportruns/{run_id}"

Endpoint = Callable[[Request], Awaitable[Response]]


def _failure(code: int, message: str) -> dict[str, object]:
    return {"success": False, "reasons": [{"code": code, "message": message}]}


def _success(response: object) -> JSONResponse:
    return JSONResponse({"success": True, "response": response})


def _epoch_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Run:
    status: str
    report_id: str
    report_type: str = "Detail"
    started_on: int = field(default_factory=_epoch_ms)
    updated_on: int = field(default_factory=_epoch_ms)

    def to_json(self, run_id: str) -> dict[str, object]:
        return {
            "id": run_id,
            "status": self.status,
            "startedOn": self.started_on,
            "updatedOn": self.updated_on,
            "reportId": self.report_id,
            "reportType": self.report_type,
            "reportDefinition": {},
        }


@dataclass
class ZuoraSimulator:
    """Stateful Reporting API server: seed runs, serve ``.app``, inspect the outcome."""

    client_id: str = "sim-client"
    client_secret: str = "sim-secret"
    # The zconnect hosts' legacy headers: apiAccessKeyId (a user name) -> apiSecretAccessKey.
    legacy_users: dict[str, str] = field(default_factory=lambda: {"sim-user": "sim-password"})
    token_ttl: int = 3600
    errors_as_http_200: bool = False
    clock: Clock = time.monotonic
    token_count: int = field(default=0, init=False)
    calls: Counter[str] = field(default_factory=Counter, init=False)
    traceparents: Traceparents = field(default_factory=Traceparents, init=False)
    auth_seen: Counter[str] = field(default_factory=Counter, init=False)
    """Authorized business calls by credential kind: `bearer` or `legacy`."""
    entity_headers: dict[str, str] = field(default_factory=dict, init=False)
    """The entityId / entityName headers of the last legacy call."""
    faults: FaultQueue = field(
        default_factory=lambda: FaultQueue(rate_limit_body=_failure(50000070, "Too many requests")),
        init=False,
    )

    def __post_init__(self) -> None:
        self._tokens = TokenStore(self.token_ttl, self.clock)
        self._runs: dict[str, _Run] = {}
        self.app = Starlette(
            routes=[
                Route("/oauth/token", self._create_token, methods=["POST"]),
                Route(_RUNS, self._guarded("get_reportrun", self._get_run), methods=["GET"]),
                Route(
                    _RUNS, self._guarded("delete_reportrun", self._cancel_run), methods=["DELETE"]
                ),
                Route(
                    "/api/rest/v1/reports/{report_id}/reportrun",
                    self._guarded("create_reportrun", self._create_run),
                    methods=["POST"],
                ),
            ]
        )

    def add_run(self, status: str = "PROCESSINGDATA", run_id: str | None = None) -> str:
        run_id = run_id or uuid.uuid4().hex
        self._runs[run_id] = _Run(status, report_id=uuid.uuid4().hex)
        return run_id

    def run_status(self, run_id: str) -> str:
        return self._runs[run_id].status

    def expire_tokens(self) -> None:
        self._tokens.expire_all()

    @property
    def issued_tokens(self) -> list[str]:
        return self._tokens.issued

    def _error(self, status: int, code: int, message: str) -> JSONResponse:
        # Pre-2024-05-20 Zuora reported v1 errors in the body of an HTTP 200.
        return JSONResponse(_failure(code, message), 200 if self.errors_as_http_200 else status)

    def _guarded(self, name: str, handler: Callable[[Request], Response]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            self.calls[name] += 1
            self.traceparents.heard(name, request.headers)
            return await self.faults.answer(auth=False, respond=lambda: respond(request))

        async def respond(request: Request) -> Response:
            if "apiaccesskeyid" in request.headers:
                entity = {k: v for k, v in request.headers.items() if k in _ENTITY_HEADERS}
                if len(entity) > 1:
                    return self._error(400, _BAD_VALUE, "Give entityId or entityName, not both")
                self.entity_headers = entity
            kind = self._credentials(request)
            if kind is None:
                return JSONResponse(_failure(_AUTH_FAILED, "Authentication error"), 401)
            self.auth_seen[kind] += 1
            return handler(request)

        return endpoint

    def _credentials(self, request: Request) -> str | None:
        """`legacy` or `bearer` when the request's credentials are good, else None."""
        key_id = request.headers.get("apiaccesskeyid")
        if key_id is not None:
            secret = request.headers.get("apisecretaccesskey")
            return "legacy" if self.legacy_users.get(key_id) == secret else None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        valid = scheme.lower() == "bearer" and self._tokens.is_live(token.strip())
        return "bearer" if valid else None

    async def _create_token(self, request: Request) -> Response:
        self.calls["create_token"] += 1
        self.traceparents.heard("create_token", request.headers)
        return await self.faults.answer(auth=True, respond=lambda: self._token(request))

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(errors="replace")))
        expected = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "grant_type": "client_credentials",
        }
        if any(form.get(key) != value for key, value in expected.items()):
            return JSONResponse(_failure(_AUTH_FAILED, "Invalid client credentials"), 401)
        self.token_count += 1
        return JSONResponse(
            {
                "access_token": self._tokens.issue(),
                "token_type": "bearer",
                "expires_in": self.token_ttl,
                "scope": "entity.1a2b",
                "jti": uuid.uuid4().hex,
            }
        )

    def _get_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = self._runs.get(run_id)
        return self._run_not_found() if run is None else _success(run.to_json(run_id))

    def _cancel_run(self, request: Request) -> Response:
        run = self._runs.get(request.path_params["run_id"])
        if run is None:
            return self._run_not_found()
        if run.status == "CANCELLED":
            return _success("The report run was canceled")
        if run.status not in _IN_PROGRESS:
            return self._error(400, _ALREADY_FINISHED, "The report run has already finished")
        run.status, run.updated_on = "CANCELLED", _epoch_ms()
        return _success("The report run has been canceled")

    def _create_run(self, request: Request) -> Response:
        run_id = uuid.uuid4().hex
        view_type = request.query_params.get("viewType", "Detail")
        self._runs[run_id] = _Run("STARTED", request.path_params["report_id"], view_type)
        return _success({"reportRunId": run_id})

    def _run_not_found(self) -> JSONResponse:
        return self._error(404, _NOT_FOUND, "Report run not found")


# Fixed ids so the README and the printed examples stay valid from run to run.
EXAMPLE_RUN = "ff808081529f4e3401529fd61f080074"
MISSING_RUN = "0123456789abcdef0123456789abcdef"


def _seed(simulator: ZuoraSimulator) -> list[Example]:
    simulator.add_run("PROCESSINGDATA", run_id=EXAMPLE_RUN)
    return [
        Example(ZuoraReportRun(EXAMPLE_RUN), "CANCELED; again -> ALREADY_CANCELED"),
        Example(ZuoraReportRun(MISSING_RUN), "FAILED with REASON_NOT_FOUND"),
    ]


SANDBOX = SandboxUpstream(
    simulator=ZuoraSimulator,
    seed=_seed,
    connection=lambda base_url: {
        "upstream": "zuora",
        "base_url": base_url,
        "client_id_env": "SANDBOX_ZUORA_CLIENT_ID",
        "client_secret_env": "SANDBOX_ZUORA_CLIENT_SECRET",
    },
    environ={"SANDBOX_ZUORA_CLIENT_ID": "sim-client", "SANDBOX_ZUORA_CLIENT_SECRET": "sim-secret"},
)
