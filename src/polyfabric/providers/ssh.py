"""The `ssh` provider: agents started on listed hosts over SSH (asyncssh).

The pool's provider config names the hosts (`host` or `host:port`, used in turn: the host with
the fewest live members first), the user, the client key file and a known_hosts file (host keys
are checked: no trust on first use), the remote Python and a base directory. One member is one
agent started in a session of its own (`setsid`), its join token fed on standard input (never on a
command line), its pid read back; `stop` sends SIGTERM to its process group, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import shlex
import warnings
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # asyncssh names DSA key classes at import; cryptography 51 deprecates DSA with a warning on
    # every such access. We never use DSA keys; the warning would only reach every user's stderr.
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

from polyfabric.domain.errors import ValidationError
from polyfabric.services.pools import AgentLaunch

__all__ = ["SshProvider", "parse_host"]

_CONNECT_TIMEOUT_S = 15.0


def parse_host(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if not host:
        host, port = entry, ""
    if port and not port.isdigit():
        raise ValidationError(f"ssh host {entry!r} is not HOST or HOST:PORT")
    return host, int(port) if port else 22


class SshProvider:
    name = "ssh"

    def start(self, launch: AgentLaunch) -> dict[str, Any]:
        config = launch.provider_config
        hosts = list(config.get("hosts") or [])
        if not hosts:
            raise ValidationError("the ssh pool has no hosts (pool create --hosts)")
        counts = launch.host_load or {}
        entry = min(hosts, key=lambda h: (counts.get(h, 0), hosts.index(h)))
        base = str(config.get("base_dir") or "~/.polyfabric/pools")
        member_dir = f"{base}/{launch.pool}/{launch.member_id}"
        python = str(config.get("python") or "python3")
        args = " ".join(shlex.quote(a) for a in launch.agent_args(f"{member_dir}/agent"))
        qdir = member_dir if member_dir.startswith("~/") else shlex.quote(member_dir)
        if member_dir.startswith("~/"):
            qdir = "~/" + shlex.quote(member_dir[2:])
        script = (f"mkdir -p {qdir} && cd {qdir} && read -r POLYFABRIC_JOIN_TOKEN && export POLYFABRIC_JOIN_TOKEN"
                  f" && (setsid {shlex.quote(python)} -m polyfabric agent {args} > agent.log 2>&1 < /dev/null &"
                  f" echo $!)")
        result = asyncio.run(self._run(config, entry, script, launch.join_token + "\n"))
        pid = result.strip().splitlines()[-1] if result.strip() else ""
        if not pid.isdigit():
            raise ValidationError(f"ssh start on {entry} printed no pid: {result[-200:]!r}")
        return {"host": entry, "pid": int(pid), "dir": member_dir, "marker": launch.member_id}

    def stop(self, handle: dict[str, Any], grace_s: float = 5.0, config: dict[str, Any] | None = None) -> None:
        pid = int(handle.get("pid") or 0)
        marker = shlex.quote(str(handle.get("marker", "")))
        if pid <= 0 or not handle.get("host"):
            return
        # Only if that pid still runs the member's agent (its command line names the member).
        script = (f"if grep -q {marker} /proc/{pid}/cmdline 2>/dev/null; then kill -TERM -- -{pid} 2>/dev/null;"
                  f" for i in $(seq {max(1, int(grace_s * 10))}); do kill -0 {pid} 2>/dev/null || exit 0;"
                  f" sleep 0.1; done; kill -KILL -- -{pid} 2>/dev/null; fi; exit 0")
        asyncio.run(self._run(config or handle.get("config") or {}, str(handle["host"]), script, ""))

    @staticmethod
    async def _run(config: dict[str, Any], entry: str, script: str, stdin: str) -> str:
        host, port = parse_host(entry)
        options: dict[str, Any] = {"username": config.get("user") or None, "port": port,
                                   "known_hosts": config.get("known_hosts"),
                                   "connect_timeout": _CONNECT_TIMEOUT_S}
        if config.get("key_file"):
            options["client_keys"] = [config["key_file"]]
        try:
            async with asyncssh.connect(host, **{k: v for k, v in options.items() if v is not None}) as conn:
                result = await conn.run(script, input=stdin, check=False, timeout=60)
        except (OSError, asyncssh.Error) as exc:
            raise ValidationError(f"ssh to {entry} failed: {exc}") from None
        if result.exit_status not in (0, None):
            raise ValidationError(f"ssh command on {entry} exited {result.exit_status}: "
                                  f"{str(result.stderr or '')[-300:]}")
        return str(result.stdout or "")
