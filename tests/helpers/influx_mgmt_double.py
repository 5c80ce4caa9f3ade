"""A contract double of InfluxDB 2.7's management API (aiohttp, in memory, 127.0.0.1).

InfluxDB 2 cannot be installed on these machines (not in Debian, PyPI or npm), so the
provisioning and the replication monitor are tested against this double. It follows
InfluxData's published OpenAPI description (influxdata/openapi, `src/oss`) and
InfluxDB 2.7's JSON for the endpoints we use:

- `GET /api/v2/orgs?org=` -> `{"orgs": [Organization]}`
- `GET|POST /api/v2/buckets`, `PATCH /api/v2/buckets/{id}` (`retentionRules` of `expire`)
- `GET|POST /api/v2/tasks`, `PATCH|DELETE /api/v2/tasks/{id}` (name/every parsed from the
  Flux `option task`, as the server does)
- `GET|POST /api/v2/authorizations`, `DELETE /api/v2/authorizations/{id}` (the server
  generates the token; OSS returns it in lists)
- `GET|POST /api/v2/remotes`, `PATCH|DELETE /api/v2/remotes/{id}` (the `remoteAPIToken`
  is write-only: never returned)
- `GET|POST /api/v2/replications`, `PATCH|DELETE /api/v2/replications/{id}` (2.7 answers
  with `RemoteBucketName` capitalised, `maxAgeSeconds`, queue sizes and last status;
  `maxQueueSizeBytes` below 33554430 is a 400)

Every request needs `Authorization: Token <admin token>` (401 otherwise). `mutations`
records every POST/PATCH/DELETE so a test can assert that a second run changed nothing.
"""

from __future__ import annotations

import itertools
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .net import free_port

MIN_QUEUE_BYTES = 33_554_430


def _now() -> str:
    return "2026-11-21T20:00:00Z"


@dataclass
class InfluxMgmtDouble:
    """The double; `start()` serves it on 127.0.0.1:`port`."""

    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    org_name: str = "hems"
    port: int = 0
    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    authorizations: dict[str, dict[str, Any]] = field(default_factory=dict)
    remotes: dict[str, dict[str, Any]] = field(default_factory=dict)
    remote_tokens: dict[str, str] = field(default_factory=dict)
    replications: dict[str, dict[str, Any]] = field(default_factory=dict)
    mutations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(0x0A00000000000001)
        self.org_id = self.new_id()
        self.orgs[self.org_id] = {"id": self.org_id, "name": self.org_name, "description": "", "status": "active"}
        self._runner: web.AppRunner | None = None

    def new_id(self) -> str:
        """A 16-hex-digit id like InfluxDB's."""
        return f"{next(self._ids):016x}"

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Serve on 127.0.0.1."""
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/api/v2/orgs", self._get_orgs)
        r.add_get("/api/v2/buckets", self._get_buckets)
        r.add_post("/api/v2/buckets", self._post_bucket)
        r.add_patch("/api/v2/buckets/{id}", self._patch_bucket)
        r.add_get("/api/v2/tasks", self._get_tasks)
        r.add_post("/api/v2/tasks", self._post_task)
        r.add_patch("/api/v2/tasks/{id}", self._patch_task)
        r.add_delete("/api/v2/tasks/{id}", self._delete(self.tasks))
        r.add_get("/api/v2/authorizations", self._get_auths)
        r.add_post("/api/v2/authorizations", self._post_auth)
        r.add_delete("/api/v2/authorizations/{id}", self._delete(self.authorizations))
        r.add_get("/api/v2/remotes", self._get_remotes)
        r.add_post("/api/v2/remotes", self._post_remote)
        r.add_patch("/api/v2/remotes/{id}", self._patch_remote)
        r.add_delete("/api/v2/remotes/{id}", self._delete(self.remotes))
        r.add_get("/api/v2/replications", self._get_replications)
        r.add_post("/api/v2/replications", self._post_replication)
        r.add_patch("/api/v2/replications/{id}", self._patch_replication)
        r.add_delete("/api/v2/replications/{id}", self._delete(self.replications))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plumbing ---------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        tokens = {self.admin_token} | {a["token"] for a in self.authorizations.values()}
        if not header.startswith("Token ") or header[6:] not in tokens:
            return _error(401, "unauthorized", "unauthorized access")
        if header[6:] != self.admin_token and not self._allowed(header[6:], request):
            return _error(401, "unauthorized", "unauthorized access")
        if request.method in ("POST", "PATCH", "DELETE"):
            self.mutations.append(f"{request.method} {request.path}")
        response: web.StreamResponse = await handler(request)
        return response

    def _allowed(self, token: str, request: web.Request) -> bool:
        """A scoped token may only read what its permissions name (enough for the monitor)."""
        auth = next(a for a in self.authorizations.values() if a["token"] == token)
        kind = request.path.split("/")[3]
        return request.method == "GET" and any(
            p["action"] == "read" and p["resource"]["type"] == kind for p in auth["permissions"]
        )

    def _delete(self, table: dict[str, dict[str, Any]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            if table.pop(request.match_info["id"], None) is None:
                return _error(404, "not found", "not found")
            return web.Response(status=204)

        return handler

    def _check_org(self, org_id: Any) -> web.Response | None:
        if org_id not in self.orgs:
            return _error(400, "invalid", "orgID is required and must exist")
        return None

    # -- orgs and buckets ------------------------------------------------------------------------

    async def _get_orgs(self, request: web.Request) -> web.Response:
        name = request.query.get("org")
        orgs = [o for o in self.orgs.values() if name is None or o["name"] == name]
        if name is not None and not orgs:
            return _error(404, "not found", f'organization name "{name}" not found')
        return web.json_response({"links": {"self": "/api/v2/orgs"}, "orgs": orgs})

    async def _get_buckets(self, request: web.Request) -> web.Response:
        q = request.query
        found = [
            b
            for b in self.buckets.values()
            if ("name" not in q or b["name"] == q["name"]) and ("orgID" not in q or b["orgID"] == q["orgID"])
        ]
        return web.json_response({"links": {"self": "/api/v2/buckets"}, "buckets": found})

    async def _post_bucket(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (bad := self._check_org(body.get("orgID"))) is not None:
            return bad
        if not body.get("name") or any(b["name"] == body["name"] for b in self.buckets.values()):
            return _error(422, "conflict", "bucket with name already exists")
        bucket = {
            "id": self.new_id(),
            "type": "user",
            "name": body["name"],
            "description": body.get("description", ""),
            "orgID": body["orgID"],
            "retentionRules": _rules(body.get("retentionRules")),
            "createdAt": _now(),
            "updatedAt": _now(),
            "links": {},
            "labels": [],
        }
        self.buckets[bucket["id"]] = bucket
        return web.json_response(bucket, status=201)

    async def _patch_bucket(self, request: web.Request) -> web.Response:
        bucket = self.buckets.get(request.match_info["id"])
        if bucket is None:
            return _error(404, "not found", "bucket not found")
        body = await request.json()
        if "retentionRules" in body:
            bucket["retentionRules"] = _rules(body["retentionRules"])
        for key in ("name", "description"):
            if body.get(key) is not None:
                bucket[key] = body[key]
        return web.json_response(bucket)

    # -- tasks ---------------------------------------------------------------------------------

    async def _get_tasks(self, request: web.Request) -> web.Response:
        q = request.query
        found = [
            t
            for t in self.tasks.values()
            if ("name" not in q or t["name"] == q["name"]) and ("orgID" not in q or t["orgID"] == q["orgID"])
        ]
        return web.json_response({"links": {"self": "/api/v2/tasks"}, "tasks": found})

    async def _post_task(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (bad := self._check_org(body.get("orgID"))) is not None:
            return bad
        option = re.search(r'option\s+task\s*=\s*\{[^}]*name:\s*"([^"]+)"[^}]*every:\s*(\w+)', body.get("flux", ""))
        if option is None:
            return _error(400, "invalid", "flux must declare option task with name and every")
        task = {
            "id": self.new_id(),
            "orgID": body["orgID"],
            "org": self.orgs[body["orgID"]]["name"],
            "name": option.group(1),
            "every": option.group(2),
            "flux": body["flux"],
            "status": body.get("status", "active"),
            "description": body.get("description", ""),
            "ownerID": "0000000000000001",
            "createdAt": _now(),
            "updatedAt": _now(),
            "links": {},
            "labels": [],
        }
        self.tasks[task["id"]] = task
        return web.json_response(task, status=201)

    async def _patch_task(self, request: web.Request) -> web.Response:
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return _error(404, "not found", "task not found")
        body = await request.json()
        for key in ("flux", "status", "description"):
            if body.get(key) is not None:
                task[key] = body[key]
        return web.json_response(task)

    # -- authorizations ----------------------------------------------------------------------------

    async def _get_auths(self, request: web.Request) -> web.Response:
        org_id = request.query.get("orgID")
        found = [a for a in self.authorizations.values() if org_id is None or a["orgID"] == org_id]
        return web.json_response({"links": {"self": "/api/v2/authorizations"}, "authorizations": found})

    async def _post_auth(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (bad := self._check_org(body.get("orgID"))) is not None:
            return bad
        permissions = body.get("permissions") or []
        if not permissions or not all(p.get("action") in ("read", "write") for p in permissions):
            return _error(400, "invalid", "permissions are required")
        auth = {
            "id": self.new_id(),
            "token": secrets.token_urlsafe(48),
            "status": body.get("status", "active"),
            "description": body.get("description", ""),
            "orgID": body["orgID"],
            "org": self.orgs[body["orgID"]]["name"],
            "userID": "0000000000000001",
            "user": "admin",
            "permissions": [
                {"action": p["action"], "resource": {k: v for k, v in p["resource"].items() if v is not None}}
                for p in permissions
            ],
            "createdAt": _now(),
            "updatedAt": _now(),
            "links": {},
        }
        self.authorizations[auth["id"]] = auth
        return web.json_response(auth, status=201)

    # -- remotes and replications -----------------------------------------------------------------

    async def _get_remotes(self, request: web.Request) -> web.Response:
        q = request.query
        if "orgID" not in q:
            return _error(400, "invalid", "orgID is required")
        found = [r for r in self.remotes.values() if r["orgID"] == q["orgID"] and q.get("name", r["name"]) == r["name"]]
        return web.json_response({"remotes": found})

    async def _post_remote(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (bad := self._check_org(body.get("orgID"))) is not None:
            return bad
        missing = [k for k in ("name", "remoteURL", "remoteAPIToken", "remoteOrgID") if not body.get(k)]
        if missing:
            return _error(400, "invalid", f"missing {missing}")
        remote = {
            "id": self.new_id(),
            "name": body["name"],
            "orgID": body["orgID"],
            "description": body.get("description", ""),
            "remoteURL": body["remoteURL"],
            "remoteOrgID": body["remoteOrgID"],
            "allowInsecureTLS": bool(body.get("allowInsecureTLS", False)),
        }
        self.remotes[remote["id"]] = remote
        self.remote_tokens[remote["id"]] = body["remoteAPIToken"]
        return web.json_response(remote, status=201)

    async def _patch_remote(self, request: web.Request) -> web.Response:
        remote = self.remotes.get(request.match_info["id"])
        if remote is None:
            return _error(404, "not found", "remote not found")
        body = await request.json()
        for key in ("name", "description", "remoteURL", "remoteOrgID", "allowInsecureTLS"):
            if body.get(key) is not None:
                remote[key] = body[key]
        if body.get("remoteAPIToken"):
            self.remote_tokens[remote["id"]] = body["remoteAPIToken"]
        return web.json_response(remote)

    async def _get_replications(self, request: web.Request) -> web.Response:
        q = request.query
        if "orgID" not in q:
            return _error(400, "invalid", "orgID is required")
        found = [
            r for r in self.replications.values() if r["orgID"] == q["orgID"] and q.get("name", r["name"]) == r["name"]
        ]
        return web.json_response({"replications": found})

    async def _post_replication(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (bad := self._check_org(body.get("orgID"))) is not None:
            return bad
        if body.get("remoteID") not in self.remotes or body.get("localBucketID") not in self.buckets:
            return _error(400, "invalid", "remote or local bucket not found")
        if not body.get("remoteBucketID") and not body.get("remoteBucketName"):
            return _error(400, "invalid", "please supply one of: remoteBucketID, remoteBucketName")
        if int(body.get("maxQueueSizeBytes", 67108860)) < MIN_QUEUE_BYTES:
            return _error(400, "invalid", "maxQueueSizeBytes too small")
        repl = {
            "id": self.new_id(),
            "orgID": body["orgID"],
            "name": body["name"],
            "description": body.get("description", ""),
            "remoteID": body["remoteID"],
            "localBucketID": body["localBucketID"],
            "remoteBucketID": body.get("remoteBucketID"),
            "RemoteBucketName": body.get("remoteBucketName", ""),
            "maxQueueSizeBytes": int(body.get("maxQueueSizeBytes", 67108860)),
            "currentQueueSizeBytes": 0,
            "remainingBytesToBeSynced": 0,
            "dropNonRetryableData": bool(body.get("dropNonRetryableData", False)),
            "maxAgeSeconds": int(body.get("maxAgeSeconds", 604800)),
        }
        self.replications[repl["id"]] = repl
        return web.json_response(repl, status=201)

    async def _patch_replication(self, request: web.Request) -> web.Response:
        repl = self.replications.get(request.match_info["id"])
        if repl is None:
            return _error(404, "not found", "replication not found")
        body = await request.json()
        if body.get("maxQueueSizeBytes") is not None and int(body["maxQueueSizeBytes"]) < MIN_QUEUE_BYTES:
            return _error(400, "invalid", "maxQueueSizeBytes too small")
        mapping = {"remoteBucketName": "RemoteBucketName"}
        for key in (
            "name",
            "description",
            "remoteID",
            "remoteBucketID",
            "remoteBucketName",
            "maxQueueSizeBytes",
            "dropNonRetryableData",
            "maxAgeSeconds",
        ):
            if body.get(key) is not None:
                repl[mapping.get(key, key)] = body[key]
        return web.json_response(repl)

    def set_replication_status(self, name: str, queue_bytes: int, code: int | None, message: str | None) -> None:
        """What the engine would report: queue size and the last response from the remote."""
        for repl in self.replications.values():
            if repl["name"] == name:
                repl["currentQueueSizeBytes"] = queue_bytes
                repl["remainingBytesToBeSynced"] = queue_bytes
                if code is not None:
                    repl["latestResponseCode"] = code
                if message is not None:
                    repl["latestErrorMessage"] = message


def _rules(rules: Any) -> list[dict[str, Any]]:
    out = []
    for rule in rules or []:
        out.append({"type": "expire", "everySeconds": int(rule.get("everySeconds", 0)), "shardGroupDurationSeconds": 0})
    return out


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)
