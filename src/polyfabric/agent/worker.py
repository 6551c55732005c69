"""A warm worker: a long-lived Python process that runs function tasks one call at a time.

Started by `polyfabric.agent.runner.workers` as `python -P <this file> IN OUT MAX` (IN/OUT: the
file descriptors of its control pipes, MAX: the largest result in bytes), in its own session,
with fd 1 and 2 connected to pipes the agent reads as the task's log. Run as a file with -P, it
needs polyfabric neither installed nor on the path, and puts no directory of its own on sys.path
(which would shadow user modules). It answers one JSON line per request line:

    -> {"function": "pkg.mod:attr", "args": {...}, "env": {...}, "cwd": DIR, "tmpdir": DIR, "workdir": DIR|null}
    <- {"ok": true, "result": <JSON>}   or   {"ok": false, "error": "ValueError: bad input"}

Before answering it flushes sys.stdout and sys.stderr, so everything the call printed is in the
output pipes before the answer is in the control pipe (the agent attributes output to calls by
that order). Imported functions are cached by reference; a failed import is retried next time.
Per call it applies `env` to os.environ, makes `cwd` the working directory and `tmpdir` the
tempfile directory, and puts `workdir` (when given) in front of sys.path; all of that is undone
afterwards. A coroutine function is run with asyncio.run. The traceback of an exception goes to
stderr. The worker exits at end of input (the agent closed the pipe, or died).

It imports nothing of polyfabric (only the standard library and orjson), so it starts fast and
stays small.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["main", "resolve"]

_cache: dict[str, Callable[..., Any]] = {}


def resolve(reference: str) -> Callable[..., Any]:
    """'pkg.mod:attr.sub' -> the object (cached once found)."""
    fn = _cache.get(reference)
    if fn is not None:
        return fn
    module_name, _, attr = reference.partition(":")
    importlib.invalidate_caches()  # files may have appeared on the path since the last import
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{reference} is not callable")
    _cache[reference] = obj
    return obj


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _call(request: dict[str, Any], home: str, max_result: int) -> bytes:
    environ_before = dict(os.environ)
    path_before = list(sys.path)
    tempdir_before = tempfile.tempdir
    try:
        os.environ.update(request.get("env") or {})
        os.chdir(request.get("cwd") or home)
        tempfile.tempdir = request.get("tmpdir") or tempdir_before
        workdir = request.get("workdir")
        if workdir and workdir not in sys.path:
            sys.path.insert(0, workdir)
        try:
            fn = resolve(request["function"])
        except BaseException as exc:
            return orjson.dumps({"ok": False, "error": f"cannot load {request['function']}: {_describe(exc)}"})
        try:
            result = fn(**(request.get("args") or {}))
            if hasattr(result, "__await__") and hasattr(result, "send"):
                import asyncio

                result = asyncio.run(result)
        except BaseException as exc:
            tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
            sys.stderr.write("".join(traceback.format_exception(type(exc), exc, tb)))
            return orjson.dumps({"ok": False, "error": _describe(exc)})
        try:
            body = orjson.dumps(result)
        except TypeError:
            try:
                body = json.dumps(result, allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                return orjson.dumps({"ok": False, "error": f"the function's result is not JSON: {exc}"})
        if len(body) > max_result:
            error = f"the function's result is too large ({len(body)} bytes; at most {max_result})"
            return orjson.dumps({"ok": False, "error": error})
        return b'{"ok":true,"result":' + body + b"}"
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        if dict(os.environ) != environ_before:
            for name in set(os.environ) - set(environ_before):
                del os.environ[name]
            for name, value in environ_before.items():
                if os.environ.get(name) != value:
                    os.environ[name] = value
        sys.path[:] = path_before
        tempfile.tempdir = tempdir_before
        with contextlib.suppress(OSError):
            os.chdir(home)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ctl_in, ctl_out, max_result = int(argv[0]), int(argv[1]), int(argv[2])
    home = os.getcwd()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    requests = os.fdopen(ctl_in, "rb")
    _write_all(ctl_out, orjson.dumps({"ready": os.getpid()}) + b"\n")
    for line in requests:
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reply = orjson.dumps({"ok": False, "error": f"the worker got a malformed request: {exc}"})
        else:
            reply = _call(request, home, max_result)
        _write_all(ctl_out, reply + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
