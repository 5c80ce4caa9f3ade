"""A simulated Shelly Gen2+ device: HTTP RPC with SHA-256 digest auth + MQTT on a real broker.

Follows Shelly's Gen2 API docs: `POST /rpc/<Method>` (params as JSON body), digest auth
(RFC 7616, SHA-256, user `admin`, realm = device id; `Shelly.GetDeviceInfo` is open);
over MQTT `<prefix>/online` (retained, last will `false`), `NotifyFullStatus` on
connect and `NotifyStatus` deltas on `<prefix>/events/rpc`, RPC requests on
`<prefix>/rpc` answered on `<src>/rpc`. Like a real device, a new MQTT config takes
effect after `Shelly.Reboot`, and `Switch.Set` with `toggle_after` flips the relay back.
Models: Plus 1PM, PM Mini Gen3, Pro 3EM, Pro EM (component shapes from the API docs).

Fleet operations (Shelly Gen2 API, "Shelly" service and "Debug Logs"): `Shelly.CheckForUpdate`
answers `{"stable": {"version", "build_id"}, "beta": {...}}` with only the stages that have a
newer build; `Shelly.Update {"stage"}` drops off MQTT, "flashes" and comes back with the new
`ver`/`fw_id` in `Shelly.GetDeviceInfo` and a fresh `<prefix>/online` `true` (or, with
`update_outcome`, never comes back / comes back on the old build / with broken readings, the
failures a staged rollout must catch). `Sys.GetConfig`/`Sys.SetConfig` carry `debug.mqtt.enable`;
while it is on, log lines in the documented format (`<id> <seq> <ts> <level>|<file>:<line>
<text>`) go to `<prefix>/debug/log`. `announce()` registers the device as `_shelly._tcp` over
mDNS on 127.0.0.1 (python-zeroconf), TXT `gen`, `app`, `ver` as a Gen2+ device sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt
from aiohttp import web
from zeroconf import IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from .net import free_port


def _plus1pm() -> dict[str, Any]:
    return {
        "switch:0": {
            "id": 0,
            "source": "init",
            "output": True,
            "apower": 1203.4,
            "voltage": 231.2,
            "current": 5.214,
            "freq": 50.0,
            "pf": 0.99,
            "aenergy": {"total": 12345.678, "by_minute": [20.1, 20.0, 19.9], "minute_ts": 1700000000},
            "ret_aenergy": {"total": 0.0, "by_minute": [0, 0, 0], "minute_ts": 1700000000},
            "temperature": {"tC": 45.1, "tF": 113.2},
        },
        "input:0": {"id": 0, "state": False},
    }


def _pmminig3() -> dict[str, Any]:
    return {
        "pm1:0": {
            "id": 0,
            "voltage": 229.8,
            "current": 0.412,
            "apower": 85.2,
            "freq": 50.0,
            "aenergy": {"total": 5123.4, "by_minute": [1.4, 1.4, 1.4], "minute_ts": 1700000000},
            "ret_aenergy": {"total": 10.5, "by_minute": [0, 0, 0], "minute_ts": 1700000000},
        },
    }


def _pro3em() -> dict[str, Any]:
    return {
        "em:0": {
            "id": 0,
            "a_current": 4.029,
            "a_voltage": 236.1,
            "a_act_power": 951.2,
            "a_aprt_power": 951.9,
            "a_pf": 1.0,
            "a_freq": 50.0,
            "b_current": 4.027,
            "b_voltage": 236.0,
            "b_act_power": -750.3,
            "b_aprt_power": 951.4,
            "b_pf": 0.79,
            "b_freq": 50.0,
            "c_current": 3.03,
            "c_voltage": 236.2,
            "c_act_power": 354.3,
            "c_aprt_power": 358.9,
            "c_pf": 0.99,
            "c_freq": 50.0,
            "n_current": None,
            "total_current": 11.086,
            "total_act_power": 555.2,
            "total_aprt_power": 2262.2,
            "user_calibrated_phase": [],
        },
        "emdata:0": {
            "id": 0,
            "a_total_act_energy": 1200.5,
            "a_total_act_ret_energy": 0.0,
            "b_total_act_energy": 800.25,
            "b_total_act_ret_energy": 3000.0,
            "c_total_act_energy": 400.0,
            "c_total_act_ret_energy": 5.0,
            "total_act": 2400.75,
            "total_act_ret": 3005.0,
        },
    }


def _proem() -> dict[str, Any]:
    return {
        "em1:0": {"id": 0, "current": 22.78, "voltage": 224.6, "act_power": 5080.3, "aprt_power": 5142.4,
                  "pf": 0.99, "freq": 50.0, "calibration": "factory"},
        "em1:1": {"id": 1, "current": 0.02, "voltage": 224.6, "act_power": -1500.0, "aprt_power": 1510.6,
                  "pf": 0.98, "freq": 50.0, "calibration": "factory"},
        "em1data:0": {"id": 0, "total_act_energy": 6644.9, "total_act_ret_energy": 2595.26},
        "em1data:1": {"id": 1, "total_act_energy": 0.0, "total_act_ret_energy": 900.0},
        "switch:0": {"id": 0, "source": "init", "output": False, "temperature": {"tC": 29.4, "tF": 85.0}},
    }  # fmt: skip


@dataclass(frozen=True)
class SimModel:
    """A device model: id stem, model code, app name and its metering components."""

    stem: str
    model: str
    app: str
    components: Any


MODELS = {
    "plus1pm": SimModel("shellyplus1pm", "SNSW-001P16EU", "Plus1PM", _plus1pm),
    "pmminig3": SimModel("shellypmminig3", "S3PM-001PCEU16", "MiniPMG3", _pmminig3),
    "pro3em": SimModel("shellypro3em", "SPEM-003CEBEU", "Pro3EM", _pro3em),
    "proem": SimModel("shellyproem50", "SPEM-002CEBEU50", "ProEM", _proem),
}


class SimRpcError(Exception):
    """An RPC error the device reports (`code`, `message`)."""

    def __init__(self, code: int, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.http_status = code, message, http_status


def _digest_fields(header: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in header.removeprefix("Digest ").split(","):
        key, _, value = part.strip().partition("=")
        fields[key.lower()] = value.strip('"')
    return fields


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ShellySim:
    """One simulated device; `await sim.start()`, then `sim.host` for HTTP RPC."""

    def __init__(
        self, model: str, broker_host: str = "127.0.0.1", mac: str | None = None, admin_password: str | None = None
    ) -> None:
        self.model = MODELS[model]
        self.mac = (mac or secrets.token_hex(6)).upper()
        self.device_id = f"{self.model.stem}-{self.mac.lower()}"
        self.status: dict[str, Any] = self.model.components()
        self.ha1 = _sha256(f"admin:{self.device_id}:{admin_password}") if admin_password else None
        self.mqtt_config: dict[str, Any] = {
            "enable": False, "server": None, "client_id": self.device_id, "user": None, "pass": None,
            "topic_prefix": self.device_id, "rpc_ntf": True, "status_ntf": False, "enable_control": True,
        }  # fmt: skip
        self.pending_mqtt: dict[str, Any] | None = None
        self.scripts: dict[int, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.reboots = 0
        self.answer_rpc = True
        self.broker_host = broker_host
        self._nonces: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._mqtt_task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._timers: dict[int, asyncio.Task[None]] = {}
        self.port = 0
        # firmware: what runs, what the update server offers, and how the next update ends
        self.version = "1.3.3"
        self.fw_id = "20240625-122245/1.3.3-gbdfd9b3"
        self.offered: dict[str, dict[str, str]] = {}
        #: "ok", "offline" (never comes back), "old_version" (boots the old build), "bad_readings"
        self.update_outcome = "ok"
        self.update_s = 0.3
        self.updates: list[str] = []
        self.debug_config: dict[str, Any] = {
            "level": 2, "file_level": None, "mqtt": {"enable": False}, "websocket": {"enable": False},
            "udp": {"addr": None},
        }  # fmt: skip
        self.debug_lines = 0
        self._debug_task: asyncio.Task[None] | None = None
        self._zeroconf: AsyncZeroconf | None = None
        self._flashing: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>` of the HTTP RPC server."""
        return f"127.0.0.1:{self.port}"

    @property
    def prefix(self) -> str:
        """The MQTT topic prefix in effect."""
        return str(self.mqtt_config["topic_prefix"])

    async def start(self) -> None:
        """Serve HTTP RPC and, if MQTT is configured, connect to the broker."""
        app = web.Application()
        app.router.add_post("/rpc/{method}", self._http)
        app.router.add_get("/rpc/{method}", self._http)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._start_mqtt()

    async def stop(self) -> None:
        """Stop everything (like pulling the plug: the broker publishes the last will)."""
        for timer in self._timers.values():
            timer.cancel()
        for task in (self._debug_task, self._flashing):
            if task is not None:
                task.cancel()
        if self._zeroconf is not None:
            await self._zeroconf.async_close()
            self._zeroconf = None
        await self._stop_mqtt()
        if self._runner is not None:
            await self._runner.cleanup()

    def configure_mqtt(self, server: str, user: str, password: str) -> None:
        """Set MQTT up directly (as if provisioned earlier); takes effect on `start`/`reboot`."""
        self.mqtt_config.update(enable=True, server=server, user=user, **{"pass": password})

    async def wait_connected(self, timeout: float = 30.0) -> None:
        """Wait until the device is connected to the broker and has announced itself."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    def _start_mqtt(self) -> None:
        if self.mqtt_config["enable"] and self.mqtt_config["server"] and self._mqtt_task is None:
            self._mqtt_task = asyncio.create_task(self._mqtt_loop())

    async def _stop_mqtt(self, graceful: bool = False) -> None:
        if graceful and self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.publish(f"{self.prefix}/online", b"false", qos=1, retain=True)
        task = self._mqtt_task
        # aiomqtt waits with `asyncio.wait_for`, which on Python 3.11 can swallow a cancellation
        # that races with its result (KNOWLEDGE.md): cancel again until the task has ended.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        if task is not None and not task.cancelled():
            with contextlib.suppress(aiomqtt.MqttError):
                task.result()
        self._mqtt_task = None
        self._client = None
        self._connected.clear()

    async def go_offline(self) -> None:
        """Drop off MQTT (`online` becomes `false`)."""
        await self._stop_mqtt(graceful=True)

    async def go_online(self) -> None:
        """Come back on MQTT."""
        self._start_mqtt()
        await self.wait_connected()

    async def reboot(self) -> None:
        """Restart: pending MQTT settings take effect, the connection is made anew."""
        self.reboots += 1
        await self._stop_mqtt(graceful=True)
        if self.pending_mqtt is not None:
            self.mqtt_config.update(self.pending_mqtt)
            self.pending_mqtt = None
        await asyncio.sleep(0.2)
        self._start_mqtt()

    def offer(self, version: str, stage: str = "stable") -> None:
        """Make the update server offer `version` on `stage` (`Shelly.CheckForUpdate`)."""
        self.offered[stage] = {"version": version, "build_id": f"20261120-101500/{version}-g{version.replace('.', '')}"}

    async def announce(self) -> None:
        """Announce the device as `_shelly._tcp` over mDNS on 127.0.0.1 (what a Gen2+ device sends)."""
        self._zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        info = ServiceInfo(
            "_shelly._tcp.local.",
            f"{self.device_id}._shelly._tcp.local.",
            addresses=[socket.inet_aton("127.0.0.1")],
            port=self.port,
            properties={"gen": "2", "app": self.model.app, "ver": self.version},
            server=f"{self.device_id}.local.",
        )
        await self._zeroconf.async_register_service(info)

    # -- MQTT --------------------------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        cfg = self.mqtt_config
        host, _, port = str(cfg["server"]).rpartition(":")
        will = aiomqtt.Will(f"{self.prefix}/online", b"false", qos=1, retain=True)
        async with aiomqtt.Client(
            host, int(port), username=cfg["user"], password=cfg["pass"], identifier=cfg["client_id"], will=will
        ) as client:
            self._client = client
            await client.subscribe(f"{self.prefix}/rpc", qos=1)
            await client.publish(f"{self.prefix}/online", b"true", qos=1, retain=True)
            await self.notify("NotifyFullStatus", self.full_status())
            self._connected.set()
            self._debug_follow()
            async for message in client.messages:
                await self._mqtt_rpc(client, message.payload if isinstance(message.payload, bytes) else b"")

    async def _mqtt_rpc(self, client: aiomqtt.Client, payload: bytes) -> None:
        if not self.answer_rpc:
            return
        request = json.loads(payload)
        reply: dict[str, Any] = {"id": request["id"], "src": self.device_id, "dst": request["src"]}
        try:
            reply["result"] = await self.dispatch(request["method"], request.get("params") or {})
        except SimRpcError as err:
            reply["error"] = {"code": err.code, "message": err.message}
        await client.publish(f"{request['src']}/rpc", json.dumps(reply).encode(), qos=1)

    def _debug_follow(self) -> None:
        wanted = bool(self.debug_config["mqtt"]["enable"]) and self._client is not None
        if wanted and (self._debug_task is None or self._debug_task.done()):
            self._debug_task = asyncio.create_task(self._debug_loop())
        elif not wanted and self._debug_task is not None:
            self._debug_task.cancel()
            self._debug_task = None

    async def _debug_loop(self) -> None:
        # "Debug Logs": one line per message on <prefix>/debug/log while debug.mqtt is on
        while self._client is not None and self.debug_config["mqtt"]["enable"]:
            await self.debug_log("shelly_notifications:79", "NotifyStatus: 'MQTT' -> ok? 1")
            await asyncio.sleep(0.1)

    async def debug_log(self, where: str, text: str) -> None:
        """Send one debug log line (only while `debug.mqtt.enable` and connected)."""
        if self._client is None or not self.debug_config["mqtt"]["enable"]:
            return
        line = f"{self.device_id} {self.debug_lines} {time.time():.3f} 2|{where} {text}"
        self.debug_lines += 1
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.publish(f"{self.prefix}/debug/log", line.encode(), qos=0)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        """Publish a notification on `<prefix>/events/rpc` (when connected with `rpc_ntf`)."""
        if self._client is None or not self.mqtt_config["rpc_ntf"]:
            return
        frame = {"src": self.device_id, "dst": f"{self.prefix}/events", "method": method, "params": params}
        await self._client.publish(f"{self.prefix}/events/rpc", json.dumps(frame).encode(), qos=1)

    async def publish_raw(self, suffix: str, payload: bytes) -> None:
        """Publish anything under the prefix (malformed frames in tests)."""
        assert self._client is not None
        await self._client.publish(f"{self.prefix}/{suffix}", payload, qos=1)

    async def change(self, delta: dict[str, Any]) -> None:
        """Change the status and send only what changed (`NotifyStatus`), as a device does."""
        for key, value in delta.items():
            self.status[key] = _merge(self.status.get(key, {}), value)
        await self.notify("NotifyStatus", {"ts": round(time.time(), 2), **delta})

    def full_status(self) -> dict[str, Any]:
        """What `Shelly.GetStatus` answers."""
        return {
            **copy.deepcopy(self.status),
            "sys": {"mac": self.mac, "restart_required": self.pending_mqtt is not None, "unixtime": int(time.time())},
            "mqtt": {"connected": self._client is not None},
            "cloud": {"connected": False},
            "wifi": {"sta_ip": "127.0.0.1", "status": "got ip", "rssi": -60},
        }

    # -- HTTP with digest auth -------------------------------------------------------------------------

    def _challenge(self) -> web.Response:
        nonce = secrets.token_hex(8)
        self._nonces.add(nonce)
        header = f'Digest qop="auth", realm="{self.device_id}", nonce="{nonce}", algorithm=SHA-256'
        return web.json_response(
            {"code": 401, "message": "unauthorized"}, status=401, headers={"WWW-Authenticate": header}
        )

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        f = _digest_fields(header)
        if f.get("username") != "admin" or f.get("nonce") not in self._nonces or f.get("realm") != self.device_id:
            return False
        ha2 = _sha256(f"{request.method}:{f.get('uri')}")
        expected = _sha256(f"{self.ha1}:{f['nonce']}:{f.get('nc')}:{f.get('cnonce')}:{f.get('qop')}:{ha2}")
        return secrets.compare_digest(expected, f.get("response", ""))

    async def _http(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if self.ha1 is not None and method != "Shelly.GetDeviceInfo" and not self._authorised(request):
            return self._challenge()
        params = (await request.json()) if request.can_read_body else dict(request.query)
        try:
            return web.json_response(await self.dispatch(method, params or {}))
        except SimRpcError as err:
            return web.json_response({"code": err.code, "message": err.message}, status=err.http_status)

    # -- RPC methods ----------------------------------------------------------------------------------

    async def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        """Run one RPC method; raises `SimRpcError` like the device answers errors."""
        self.calls.append(method)
        if method == "Shelly.GetDeviceInfo":
            return {
                "name": None, "id": self.device_id, "mac": self.mac, "slot": 0, "model": self.model.model,
                "gen": 2, "fw_id": self.fw_id, "ver": self.version, "app": self.model.app,
                "auth_en": self.ha1 is not None, "auth_domain": self.device_id if self.ha1 else None,
            }  # fmt: skip
        if method == "Shelly.GetStatus":
            return self.full_status()
        if method == "Shelly.Reboot":
            asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self.reboot()))
            return None
        if method == "Shelly.CheckForUpdate":
            return copy.deepcopy(self.offered)
        if method == "Shelly.Update":
            return self._update(params)
        if method == "Sys.GetConfig":
            return {"device": {"name": None, "mac": self.mac}, "debug": copy.deepcopy(self.debug_config)}
        if method == "Sys.SetConfig":
            config = params.get("config")
            if not isinstance(config, dict):
                raise SimRpcError(-103, "Missing required argument 'config'!")
            self.debug_config = _merge(self.debug_config, config.get("debug", {}))
            self._debug_follow()
            return {"restart_required": False}
        if method == "Shelly.SetAuth":
            if params.get("user") != "admin" or params.get("realm") != self.device_id:
                raise SimRpcError(-103, "Invalid argument 'realm'")
            self.ha1 = params.get("ha1")
            return None
        if method == "MQTT.GetConfig":
            return {k: v for k, v in {**self.mqtt_config, **(self.pending_mqtt or {})}.items() if k != "pass"}
        if method == "MQTT.GetStatus":
            return {"connected": self._client is not None}
        if method == "MQTT.SetConfig":
            config = params.get("config")
            if not isinstance(config, dict):
                raise SimRpcError(-103, "Missing required argument 'config'!")
            self.pending_mqtt = {**(self.pending_mqtt or {}), **config}
            return {"restart_required": True}
        if method.startswith("Script."):
            return self._script(method, params)
        if method == "Switch.Set":
            return await self._switch_set(params)
        if method == "Switch.GetStatus":
            return copy.deepcopy(self._switch(params))
        raise SimRpcError(404, f"No handler for {method}", 404)

    def _update(self, params: dict[str, Any]) -> None:
        stage = params.get("stage", "stable")
        if "url" in params:
            raise SimRpcError(-103, "url updates are not simulated")
        if stage not in ("stable", "beta"):
            raise SimRpcError(-103, f"Invalid argument 'stage': {stage}")
        build = self.offered.get(stage)
        if build is None:
            raise SimRpcError(-114, f"No {stage} update available")
        if self._flashing is not None and not self._flashing.done():
            raise SimRpcError(-108, "Update in progress")
        self.updates.append(build["version"])
        self._flashing = asyncio.create_task(self._flash(build))
        return None

    async def _flash(self, build: dict[str, str]) -> None:
        # download, write, reboot: off MQTT meanwhile, back with the new build
        await asyncio.sleep(0.05)
        self.reboots += 1
        await self._stop_mqtt(graceful=True)
        await asyncio.sleep(self.update_s)
        if self.update_outcome == "offline":
            return
        if self.update_outcome != "old_version":
            self.version, self.fw_id = build["version"], build["build_id"]
            self.offered = {s: b for s, b in self.offered.items() if b["version"] != self.version}
        if self.update_outcome == "bad_readings":
            self.status = {}
        self._start_mqtt()

    def _switch(self, params: dict[str, Any]) -> dict[str, Any]:
        switch = self.status.get(f"switch:{params.get('id', 0)}")
        if switch is None:
            raise SimRpcError(-105, f"Argument 'id', value {params.get('id')} not found!")
        return dict(switch)

    async def _switch_set(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = int(params.get("id", 0))
        was_on = bool(self._switch(params)["output"])
        if not isinstance(params.get("on"), bool):
            raise SimRpcError(-103, "Missing required argument 'on'!")
        if channel in self._timers:
            self._timers.pop(channel).cancel()
        delta: dict[str, Any] = {"id": channel, "output": params["on"], "source": "MQTT"}
        toggle_after = params.get("toggle_after")
        if toggle_after is not None:
            delta.update(timer_started_at=1700000000.0, timer_duration=float(toggle_after))
            self._timers[channel] = asyncio.create_task(self._flip_back(channel, float(toggle_after), not params["on"]))
        await self.change({f"switch:{channel}": delta})
        return {"was_on": was_on}

    async def _flip_back(self, channel: int, after_s: float, output: bool) -> None:
        await asyncio.sleep(after_s)
        self._timers.pop(channel, None)
        await self.change({f"switch:{channel}": {"output": output, "source": "timer"}})

    def _script(self, method: str, params: dict[str, Any]) -> Any:
        if method == "Script.List":
            return {"scripts": [{"id": i, "name": s["name"], "enable": s["enable"], "running": s["running"]}
                                for i, s in self.scripts.items()]}  # fmt: skip
        if method == "Script.Create":
            new_id = max(self.scripts, default=0) + 1
            self.scripts[new_id] = {"name": params.get("name"), "enable": False, "running": False, "code": ""}
            return {"id": new_id}
        script = self.scripts.get(int(params.get("id", -1)))
        if script is None:
            raise SimRpcError(-105, f"Argument 'id', value {params.get('id')} not found!")
        if method == "Script.PutCode":
            script["code"] = (script["code"] if params.get("append") else "") + params["code"]
            return {"len": len(script["code"])}
        if method == "Script.GetCode":
            offset = int(params.get("offset", 0))
            data = script["code"][offset : offset + 2048]
            return {"data": data, "left": max(0, len(script["code"]) - offset - len(data))}
        if method == "Script.SetConfig":
            script["enable"] = bool(params.get("config", {}).get("enable", script["enable"]))
            return {"restart_required": False}
        if method == "Script.Delete":
            # Script.Delete {id} (Shelly gen2 Script component) deletes the slot. Whether firmware
            # refuses a running script is not documented: the simulator does, so a caller that
            # forgets Script.Stop fails its test
            if script["running"]:
                raise SimRpcError(-103, "Script is running")
            del self.scripts[int(params["id"])]
            return None
        if method in ("Script.Start", "Script.Stop"):
            was = script["running"]
            script["running"] = method == "Script.Start"
            return {"was_running": was}
        raise SimRpcError(404, f"No handler for {method}", 404)


def _merge(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return new
