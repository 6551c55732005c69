"""Policies: CEL rules over the job, the task, the node and the time, at every scope. PURE.

One evaluator serves the coordinator (admission at submit, placement as a scheduler filter, the
`policy test` dry evaluation) and the agent (its owner's policy, which answers offers), so both
sides of a negotiation read a rule the same way.

A policy document (YAML, loaded by the caller):

    name: residency-eu             # letters, digits, '.', '_', '-'
    kind: placement                # admission | placement | limits | remediation
    scope: network                 # network | domain:NAME
    mode: enforce                  # enforce | dry-run (records what it would deny, denies nothing)
    when: 'task.labels.residency == "eu"'    # optional: does the policy apply? (CEL, bool)
    allow: 'node.labels.region in ["eu-west", "eu-central"]'   # must be true (CEL, bool)
    reason: EU-resident data stays on EU nodes                   # said with every deny
    limits: {max_cpu_share: 0.5, commands: [python3, sh], max_runtime: 1h}   # kind: limits
    action: cordon                 # kind: remediation: block | cordon | quarantine

Variables (plain maps; absent keys are absent, test them with `has()` or `in`):
    job   {id, name, domain, priority, labels, submitted_by, task_count, tasks: [task...]}
    task  {name, key, labels, command, function, cpu, memory, gpus, slots, timeout_s, priority}
    node  {id, name, domain, labels, state, cpu, memory, gpus, slots}
    now   {unix, hour, minute, weekday (0 = Monday), date} in UTC

Combination (`combine`): every applicable policy at every scope must allow; one enforced deny
anywhere wins; a dry-run deny is recorded (`would_deny`) and changes nothing. Every decision
carries reasons: each deny names scope, policy, version and why; an allow names the policy
versions that allowed it (or says no policy applied). A `when` that fails to evaluate means the
policy does not apply; an `allow` that fails to evaluate denies (fail closed), saying why.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cel
from cel.stdlib import add_stdlib_to_context

from polyfabric.domain.errors import ValidationError

__all__ = [
    "ACTIONS",
    "KINDS",
    "MODES",
    "Decision",
    "Evaluator",
    "Finding",
    "OwnerPolicy",
    "advertised_owner_policy",
    "Policy",
    "PolicyInvalid",
    "Rule",
    "answer_bytes",
    "combine",
    "job_context",
    "node_context",
    "parse_owner_policy",
    "parse_policy",
    "read_by",
    "placement",
    "placement_rules",
    "share_findings",
    "share_limits",
    "task_context",
    "time_context",
]

KINDS = ("admission", "placement", "limits", "remediation")
MODES = ("enforce", "dry-run")
ACTIONS = ("block", "cordon", "quarantine")
POLICY_KEYS = ("name", "kind", "scope", "mode", "description", "when", "allow", "reason", "limits", "action")
LIMIT_KEYS = ("max_cpu_share", "foreign_only", "commands", "max_runtime")
OWNER_KEYS = ("domains", "hours", "max_cpu_share", "require_labels", "when", "rank", "on_change", "checkpoint_grace",
              "reason", "advertise")
OWNER_CHECKPOINT_GRACE_S = 10.0  # on_change: stop: how long a task asked to checkpoint may take
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$")
_DOMAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class PolicyInvalid(ValidationError):
    """A policy document with problems; the message lists each, naming the field."""

    def __init__(self, name: str | None, problems: list[str]) -> None:
        what = f"policy {name!r}" if name else "the policy"
        super().__init__(f"{what} is invalid: " + "; ".join(problems))
        self.problems = tuple(problems)


# -- rules ----------------------------------------------------------------------------------------


_READS = re.compile(r"\b(job|task|node|now)\s*\.\s*([A-Za-z_]\w*)")
_WHOLE = re.compile(r"\b(job|task|node|now)\b(?!\s*\.)")


def _fields_read(source: str, variables: frozenset[str]) -> dict[str, tuple[str, ...] | None]:
    """Per variable, the top-level fields a rule reads (None: the whole map, e.g. `size(job)`)."""
    text = re.sub(r"'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"", '""', source)  # not inside string literals
    whole = set(_WHOLE.findall(text))
    found: dict[str, set[str]] = {}
    for var, name in _READS.findall(text):
        found.setdefault(var, set()).add(name)
    return {var: None if var in whole else tuple(sorted(found.get(var, ()))) for var in variables}


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled CEL expression and the variables it reads (what its answer depends on).
    `fields` names, per variable, the fields it reads: only those are handed to CEL (converting
    a Python map into CEL values costs about 10 µs a key)."""

    source: str
    program: Any = field(compare=False, repr=False)
    variables: frozenset[str]
    fields: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict, compare=False)

    @property
    def node_only(self) -> bool:
        """Reads the node (and the time) and nothing of the job: one answer per node."""
        return self.variables <= {"node", "now"}

    @property
    def job_only(self) -> bool:
        """Reads nothing of the node: one answer per job/task class."""
        return "node" not in self.variables


_COMPILED: dict[str, Rule] = {}
_MISSING: Any = object()


def compile_rule(source: str, where: str) -> Rule:
    """Compile once per process (the cache is keyed by the text; programs are immutable)."""
    found = _COMPILED.get(source)
    if found is not None:
        return found
    if not isinstance(source, str) or not source.strip():
        raise ValidationError(f"{where} must be a non-empty CEL expression")
    try:
        program = cel.compile(source)
        names = frozenset(program.variables())
    except Exception as exc:  # the binding raises ValueError with the parser's text
        raise ValidationError(f"{where}: invalid CEL expression {source!r}: {exc}") from None
    unknown = sorted(names - {"job", "task", "node", "now"})
    if unknown:
        raise ValidationError(f"{where}: unknown variable(s) {', '.join(unknown)} in {source!r} "
                              "(known: job, task, node, now)")
    rule = Rule(source, program, names, _fields_read(source, names))
    if len(_COMPILED) < 10_000:
        _COMPILED[source] = rule
    return rule


class Evaluator:
    """Evaluates rules against one set of variables. Not thread-safe: one per thread or pass."""

    __slots__ = ("_bound", "_context", "_vars")

    def __init__(self) -> None:
        self._vars: dict[str, Any] = {}
        self._bound: dict[str, Any] = {}  # what the CEL context holds now (by identity)
        self._context = cel.Context()
        add_stdlib_to_context(self._context)

    def _hand_over(self, rule: Rule) -> None:
        """Give CEL the variables the rule reads. Converting a map into CEL values is the costly
        part (tens of µs), executing a program is not (< 1 µs): a value already handed over (the
        same object) is not converted again, so binding once and running many rules is cheap."""
        bound = self._bound
        for var in rule.variables:
            value = self._vars.get(var)
            if value is None:
                value = _MISSING
            if bound.get(var) is not value:
                self._context.add_variable(var, value if value is not _MISSING else {})
                bound[var] = value

    def bind(self, **variables: Any) -> Evaluator:
        self._vars.clear()
        self._vars.update({k: v for k, v in variables.items() if v is not None})
        return self

    def set(self, name: str, value: Any) -> None:
        self._vars[name] = value

    def truth(self, rule: Rule) -> tuple[bool | None, str]:
        """(True/False, "") or (None, why it could not be evaluated)."""
        self._hand_over(rule)
        try:
            value = rule.program.execute(self._context)
        except KeyError as exc:
            return None, f"no such key {exc.args[0]!r}"
        except Exception as exc:
            return None, str(exc) or type(exc).__name__
        if not isinstance(value, bool):
            return None, f"gave {value!r}, not true or false"
        return value, ""

    def number(self, rule: Rule) -> float | None:
        self._hand_over(rule)
        try:
            value = rule.program.execute(self._context)
        except Exception:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)


# -- policies ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    max_cpu_share: float | None = None  # of a node's CPU, for tasks of other domains (foreign_only)
    foreign_only: bool = True
    commands: tuple[str, ...] | None = None  # allowed program names (the command's first word)
    max_runtime_s: float | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    kind: str
    scope: str  # "network" or "domain:NAME" (owner policies are "node", see OwnerPolicy)
    mode: str = "enforce"
    when: Rule | None = None
    allow: Rule | None = None
    reason: str = ""
    description: str = ""
    limits: Limits | None = None
    action: str = "block"
    version: int = 0
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def dry_run(self) -> bool:
        return self.mode == "dry-run"

    @property
    def ref(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def domain(self) -> str | None:
        return self.scope[7:] if self.scope.startswith("domain:") else None

    def with_version(self, version: int) -> Policy:
        return Policy(self.name, self.kind, self.scope, self.mode, self.when, self.allow, self.reason,
                      self.description, self.limits, self.action, version, self.document)

    def applies_to_domains(self, *domains: str | None) -> bool:
        """Network policies apply everywhere; a domain policy to its jobs and to its nodes."""
        own = self.domain
        return own is None or own in domains


def _duration(value: Any, where: str, problems: list[str]) -> float | None:
    if isinstance(value, bool):
        problems.append(f"{where} must be a duration like 90s, 10m or 2h")
        return None
    if isinstance(value, int | float):
        if value <= 0:
            problems.append(f"{where} must be positive")
            return None
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        problems.append(f"{where} must be a duration like 90s, 10m or 2h, got {value!r}")
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def _share(value: Any, where: str, problems: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        problems.append(f"{where} must be a number from 0 to 1, got {value!r}")
        return None
    return float(value)


def parse_policy(doc: Any, *, version: int = 0) -> Policy:
    """Validate a policy document; raise PolicyInvalid naming every bad field."""
    if not isinstance(doc, Mapping):
        raise PolicyInvalid(None, ["a policy must be a map with name, kind, scope and allow"])
    problems: list[str] = []
    name = doc.get("name")
    shown = name if isinstance(name, str) else None
    for key in doc:
        if key not in POLICY_KEYS:
            problems.append(f"unknown key {key!r} (known: {', '.join(POLICY_KEYS)})")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"name {name!r} is not valid: use 1-64 letters, digits, '.', '_' and '-'")
    kind = doc.get("kind")
    if kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    scope = doc.get("scope", "network")
    if scope == "node":
        problems.append("scope node is held by the node's agent (agent --policy FILE), not the coordinator")
    elif not isinstance(scope, str) or not (scope == "network" or (
            scope.startswith("domain:") and _DOMAIN.match(scope[7:]))):
        problems.append(f"scope must be network or domain:NAME, got {scope!r}")
    mode = doc.get("mode", "enforce")
    if mode not in MODES:
        problems.append(f"mode must be enforce or dry-run, got {mode!r}")
    rules: dict[str, Rule | None] = {"when": None, "allow": None}
    for key in rules:
        source = doc.get(key)
        if source is None:
            continue
        try:
            rules[key] = compile_rule(source, key)
        except ValidationError as exc:
            problems.append(exc.message if hasattr(exc, "message") else str(exc))
    reason = doc.get("reason", "")
    if not isinstance(reason, str):
        problems.append("reason must be text")
        reason = ""
    limits = None
    raw_limits = doc.get("limits")
    if kind == "limits":
        if not isinstance(raw_limits, Mapping) or not raw_limits:
            problems.append("a limits policy needs limits: {max_cpu_share, commands, max_runtime}")
        else:
            for key in raw_limits:
                if key not in LIMIT_KEYS:
                    problems.append(f"limits: unknown key {key!r} (known: {', '.join(LIMIT_KEYS)})")
            share = raw_limits.get("max_cpu_share")
            commands = raw_limits.get("commands")
            if commands is not None and (not isinstance(commands, list) or not all(
                    isinstance(c, str) and c for c in commands)):
                problems.append("limits.commands must be a list of program names")
                commands = None
            runtime = raw_limits.get("max_runtime")
            limits = Limits(
                max_cpu_share=_share(share, "limits.max_cpu_share", problems) if share is not None else None,
                foreign_only=bool(raw_limits.get("foreign_only", True)),
                commands=tuple(commands) if commands is not None else None,
                max_runtime_s=_duration(runtime, "limits.max_runtime", problems) if runtime is not None else None,
            )
    elif raw_limits is not None:
        problems.append("limits is only for kind: limits")
    elif rules["allow"] is None and kind in KINDS:
        problems.append(f"a {kind} policy needs allow: a CEL expression that must be true")
    action = doc.get("action", "block")
    if action not in ACTIONS:
        problems.append(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    elif action != "block" and kind != "remediation":
        problems.append("action cordon or quarantine is only for kind: remediation")
    if kind == "admission" and rules["allow"] is not None and "node" in rules["allow"].variables:
        problems.append("an admission policy cannot read node (no node is chosen at submit)")
    if kind == "remediation" and rules["allow"] is not None and not rules["allow"].node_only:
        problems.append("a remediation policy's allow reads only node and now")
    description = doc.get("description", "")
    if problems:
        raise PolicyInvalid(shown, problems)
    return Policy(str(name), str(kind), str(scope), str(mode), rules["when"], rules["allow"], reason,
                  str(description or ""), limits, str(action), version, dict(doc))


# -- findings and decisions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One applicable policy's answer. `ref` is "name vN"; `reason` says why (for a deny) or what
    allowed (for an allow)."""

    scope: str
    policy: str
    version: int
    allowed: bool
    reason: str
    dry_run: bool = False

    @property
    def ref(self) -> str:
        return f"{self.policy} v{self.version}"

    def describe(self) -> str:
        verb = "allowed by" if self.allowed else ("would deny (dry-run)" if self.dry_run else "denied by")
        return f"{verb} {self.scope} policy {self.ref}: {self.reason}" if self.reason else f"{verb} {self.scope} " \
            f"policy {self.ref}"

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "policy": self.policy, "version": self.version, "allowed": self.allowed,
                "reason": self.reason, "dry_run": self.dry_run}


@dataclass(frozen=True, slots=True)
class Decision:
    """What every applicable policy said together. `allowed` is False iff some enforced policy
    denied. `reasons` is never empty."""

    allowed: bool
    denies: tuple[Finding, ...] = ()
    would_deny: tuple[Finding, ...] = ()
    allowed_by: tuple[Finding, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        found = [f.describe() for f in (*self.denies, *self.would_deny, *self.allowed_by)]
        return tuple(found) or ("no policy applies",)

    @property
    def first_deny(self) -> Finding | None:
        return self.denies[0] if self.denies else None

    def describe(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "denies": [f.to_dict() for f in self.denies],
                "would_deny": [f.to_dict() for f in self.would_deny],
                "allowed_by": [f.ref for f in self.allowed_by], "reasons": list(self.reasons)}


_ORDER = {"network": 0, "node": 2}


def combine(findings: Iterable[Finding]) -> Decision:
    """Every scope must allow; an enforced deny anywhere wins; dry-run denies are only recorded.
    Denies come network first, then domains, then the node, so the first one names the widest."""
    denies, would, allowed = [], [], []
    for finding in findings:
        if finding.allowed:
            allowed.append(finding)
        elif finding.dry_run:
            would.append(finding)
        else:
            denies.append(finding)
    # A total order (version and reason break ties), so the outcome never depends on the order
    # the findings came in.
    key = lambda f: (_ORDER.get(f.scope, 1), f.scope, f.policy, f.version, f.reason)  # noqa: E731
    denies.sort(key=key)
    would.sort(key=key)
    allowed.sort(key=key)
    return Decision(not denies, tuple(denies), tuple(would), tuple(allowed))


ALLOW_ALL = Decision(True)


def evaluate(policy: Policy, ev: Evaluator) -> Finding | None:
    """One policy against the variables bound in `ev`: None if it does not apply."""
    if policy.when is not None:
        applies, _problem = ev.truth(policy.when)
        if not applies:
            return None
    return judge(policy, ev)


def judge(policy: Policy, ev: Evaluator) -> Finding:
    """The policy's `allow` (its `when` already held)."""
    if policy.allow is None:
        return Finding(policy.scope, policy.name, policy.version, True, "", policy.dry_run)
    ok, problem = ev.truth(policy.allow)
    if ok:
        return Finding(policy.scope, policy.name, policy.version, True, "", policy.dry_run)
    reason = policy.reason or f"{policy.allow.source} is false"
    if ok is None:
        reason = f"{policy.allow.source} could not be evaluated ({problem}); denied"
    return Finding(policy.scope, policy.name, policy.version, False, reason, policy.dry_run)


def check_limits(policy: Policy, task: Mapping[str, Any], node: Mapping[str, Any] | None = None,
                 foreign_cpu: int = 0) -> Finding:
    """A limits policy on one task (and, at placement, the CPU other domains already use on the
    node). Pure arithmetic, no CEL."""
    limits = policy.limits
    assert limits is not None
    problems = []
    command = task.get("command") or []
    if limits.commands is not None and command:
        program = str(command[0]).rsplit("/", 1)[-1]
        if program not in limits.commands:
            problems.append(f"command {program!r} is not allowed (allowed: {', '.join(limits.commands)})")
    if limits.max_runtime_s is not None:
        timeout = task.get("timeout_s")
        if timeout is None or timeout > limits.max_runtime_s:
            problems.append(f"timeout {timeout or 'none'} exceeds the maximum runtime {limits.max_runtime_s:g}s")
    if node is not None:
        problem = _cpu_share_problem(limits, task, node, foreign_cpu)
        if problem:
            problems.append(problem)
    return _limits_finding(policy, problems)


def _cpu_share_problem(limits: Limits, task: Mapping[str, Any], node: Mapping[str, Any],
                       foreign_cpu: int) -> str | None:
    if limits.max_cpu_share is None or (limits.foreign_only and task.get("domain") == node.get("domain")):
        return None
    cap = int(node.get("cpu") or 0)
    cpu = int(task.get("cpu") or 0) + foreign_cpu
    if cap and cpu > limits.max_cpu_share * cap:
        return (f"{'foreign ' if limits.foreign_only else ''}CPU on node {node.get('name')} "
                f"would be {cpu}m of {cap}m (max share {limits.max_cpu_share:g})")
    return None


def _limits_finding(policy: Policy, problems: Sequence[str]) -> Finding:
    ok = not problems
    reason = "; ".join(problems)
    if not ok and policy.reason:
        reason = f"{policy.reason} ({reason})"
    return Finding(policy.scope, policy.name, policy.version, ok, reason, policy.dry_run)


# -- placement: what the scheduler's policy filters and `policy test` both decide with -------------------


def placement_rules(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    """The policies asked per (task, node) through their `when` and `allow`: placement policies,
    and remediation policies whose action is `block` (a node that violates one takes no new task;
    cordon and quarantine are left to a controller). The scheduler's `policy` filter and
    `placement()` both take theirs from here."""
    return tuple(p for p in policies if p.kind == "placement" or (p.kind == "remediation" and p.action == "block"))


def share_limits(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    """Limits policies with a `max_cpu_share`: what the `policy_share` filter and `placement()` check."""
    return tuple(p for p in policies if p.kind == "limits" and p.limits is not None
                 and p.limits.max_cpu_share is not None)


def share_findings(policies: Iterable[Policy], task: Mapping[str, Any], node: Mapping[str, Any],
                   foreign_cpu: Callable[[], int], holds: Callable[[Rule], bool], *,
                   total_cpu: Callable[[], int] | None = None, only_denies: bool = False) -> list[Finding]:
    """The CPU-share limits (`share_limits`) on one task placed on one node, one finding per limit
    that applies (`only_denies`: only the denying ones, dry-run included). The one decision the
    scheduler's `policy_share` filter and `placement()` (so `policy test`) both make.

    `task` needs `domain` and `cpu`, `node` `domain`, `cpu` and `name`. `foreign_cpu()` is the CPU
    that tasks of other domains than the node's already hold there (asked once, and only when a
    limit applies). `holds(rule)` says whether a policy's `when` holds (false when it cannot be
    evaluated). A limit with `foreign_only` (the default) skips tasks of the node's own domain and
    counts only other domains' CPU; with `foreign_only: false` it applies to every task and counts
    the CPU that all tasks hold there (`total_cpu()`, asked once). One of scope domain:D applies
    to D's jobs and to D's nodes."""
    out: list[Finding] = []
    used: int | None = None
    used_all: int | None = None
    task_domain, node_domain = task.get("domain"), node.get("domain")
    cap, cpu = int(node.get("cpu") or 0), int(task.get("cpu") or 0)
    for policy in policies:
        limits = policy.limits
        if limits is None or limits.max_cpu_share is None:
            continue
        if limits.foreign_only and task_domain == node_domain:
            continue
        if not policy.applies_to_domains(task_domain, node_domain):
            continue
        if policy.when is not None and not holds(policy.when):
            continue
        if limits.foreign_only:
            if used is None:
                used = foreign_cpu()
            held = used
        else:
            if used_all is None:
                used_all = (total_cpu or foreign_cpu)()
            held = used_all
        if cap and cpu + held > limits.max_cpu_share * cap:
            out.append(_limits_finding(policy, [_cpu_share_problem(limits, task, node, held) or ""]))
        elif not only_denies:
            out.append(Finding(policy.scope, policy.name, policy.version, True, "", policy.dry_run))
    return out


# -- contexts (the variables) -------------------------------------------------------------------------


def read_by(rule: Rule, var: str, value: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """`value` cut down to the fields `rule` reads of `var` (whole where it reads it whole; None
    where it does not read it): what to hand to CEL, which converts a map key by key, for the
    same answer."""
    if value is None or var not in rule.variables:
        return None
    fields = rule.fields.get(var)
    if fields is None:
        return value
    return {f: value[f] for f in fields if f in value}


def time_context(now: float) -> dict[str, Any]:
    moment = _dt.datetime.fromtimestamp(now, _dt.UTC)
    return {"unix": now, "hour": moment.hour, "minute": moment.minute, "weekday": moment.weekday(),
            "date": moment.date().isoformat()}


def task_context(*, name: str, key: str = "", labels: Mapping[str, str] | None = None,
                 command: Sequence[str] | None = None, function: str | None = None, cpu: int = 0,
                 memory: int = 0, gpus: int = 0, slots: int = 1, timeout_s: float | None = None,
                 priority: int = 0, domain: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "key": key or name, "labels": dict(labels or {}), "cpu": cpu,
                           "memory": memory, "gpus": gpus, "slots": slots, "priority": priority, "domain": domain,
                           "command": list(command or [])}
    if function is not None:
        out["function"] = function
    if timeout_s is not None:
        out["timeout_s"] = timeout_s
    return out


def job_context(*, id: str, name: str, domain: str, priority: int = 0, labels: Mapping[str, str] | None = None,
                submitted_by: str = "", tasks: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    return {"id": id, "name": name, "domain": domain, "priority": priority, "labels": dict(labels or {}),
            "submitted_by": submitted_by, "task_count": len(tasks), "tasks": [dict(t) for t in tasks]}


def node_context(*, id: str, name: str, domain: str, labels: Mapping[str, str], state: str = "active",
                 cpu: int = 0, memory: int = 0, gpus: int = 0, slots: int = 0) -> dict[str, Any]:
    return {"id": id, "name": name, "domain": domain, "labels": dict(labels), "state": state, "cpu": cpu,
            "memory": memory, "gpus": gpus, "slots": slots}


# -- evaluating a policy set --------------------------------------------------------------------------


def admission(policies: Iterable[Policy], job: Mapping[str, Any], now: float,
              ev: Evaluator | None = None) -> Decision:
    """May this job enter? Admission policies over `job` (with `job.tasks`), limits policies on
    each of its tasks (commands, runtime)."""
    ev = (ev or Evaluator()).bind(job=job, now=time_context(now))
    findings: list[Finding] = []
    domain = job.get("domain")
    for policy in policies:
        if not policy.applies_to_domains(domain):
            continue
        if policy.kind == "admission":
            finding = evaluate(policy, ev)
            if finding is not None:
                findings.append(finding)
        elif policy.kind == "limits":
            worst = None
            for task in job.get("tasks") or ():
                ev.set("task", task)
                if policy.when is not None and not ev.truth(policy.when)[0]:
                    continue
                finding = check_limits(policy, task)
                if not finding.allowed:
                    worst = Finding(finding.scope, finding.policy, finding.version, False,
                                    f"task {task.get('name')}: {finding.reason}", finding.dry_run)
                    break
                worst = worst or finding
            ev.set("task", None)
            if worst is not None:
                findings.append(worst)
    return combine(findings)


def placement(policies: Iterable[Policy], job: Mapping[str, Any], task: Mapping[str, Any],
              node: Mapping[str, Any], now: float, ev: Evaluator | None = None, foreign_cpu: int = 0,
              total_cpu: int | None = None) -> Decision:
    """May this task run on this node? What the scheduler's `policy` and `policy_share` filters
    decide, from the same pieces (`placement_rules` and `evaluate`, `share_limits` and
    `share_findings`), without their caches: the policies of `placement_rules` whose scope is the
    network, the job's domain or the node's domain, and the CPU-share limits, `foreign_cpu` being
    what tasks of other domains already hold on the node and `total_cpu` what all tasks hold there
    (for `foreign_only: false`; default: `foreign_cpu`). Serves `policy test` and the tests."""
    ev = (ev or Evaluator()).bind(job=job, task=task, node=node, now=time_context(now))
    findings: list[Finding] = []
    for policy in placement_rules(policies):
        if not policy.applies_to_domains(job.get("domain"), node.get("domain")):
            continue
        finding = evaluate(policy, ev)
        if finding is not None:
            findings.append(finding)
    findings.extend(share_findings(share_limits(policies), task, node, lambda: foreign_cpu,
                                   lambda rule: bool(ev.truth(rule)[0]),
                                   total_cpu=lambda: foreign_cpu if total_cpu is None else total_cpu))
    return combine(findings)


def remediation(policies: Iterable[Policy], node: Mapping[str, Any], now: float,
                ev: Evaluator | None = None) -> list[tuple[Policy, Finding]]:
    """The remediation policies a node violates (each with its action: cordon or quarantine)."""
    ev = (ev or Evaluator()).bind(node=node, now=time_context(now))
    out = []
    for policy in policies:
        if policy.kind != "remediation" or not policy.applies_to_domains(node.get("domain")):
            continue
        finding = evaluate(policy, ev)
        if finding is not None and not finding.allowed:
            out.append((policy, finding))
    return out


# -- the node owner's policy (held by the agent) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnerPolicy:
    """What a node's owner accepts and prefers. Evaluated by the agent on every offer; `version`
    counts reloads. An empty policy accepts everything."""

    domains: tuple[str, ...] | None = None
    hours: tuple[int, int] | None = None  # minutes since midnight UTC, [start, end)
    max_cpu_share: float | None = None  # of this machine, for jobs of other domains
    require_labels: Mapping[str, str] = field(default_factory=dict)
    when: Rule | None = None
    rank: Rule | None = None
    on_change: str = "finish"  # running tasks a reloaded policy no longer allows: finish | stop
    reason: str = ""
    version: int = 1
    name: str = "owner"
    # on_change: stop asks such a task to checkpoint and stop, and stops it after this long (0: at once)
    checkpoint_grace_s: float = OWNER_CHECKPOINT_GRACE_S
    # The agent tells the coordinator what it accepts (`advertised()`), so that the scheduler offers
    # only what this policy would accept (HTCondor's machine ad); false keeps the policy private.
    advertise: bool = True
    digest: str = field(default="", compare=False)  # of the document it was parsed from

    @property
    def reads_time(self) -> bool:
        """Does a decision depend on the clock (hours, or a `when` that reads `now`)?"""
        return self.hours is not None or (self.when is not None and "now" in self.when.variables)

    def advertised(self) -> dict[str, Any] | None:
        """What the agent declares of this policy to the coordinator (None when `advertise: false`):
        every accept rule, the reason and the version, in the form `parse_owner_policy` reads."""
        if not self.advertise:
            return None
        doc: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.domains is not None:
            doc["domains"] = list(self.domains)
        if self.hours is not None:
            doc["hours"] = f"{_hhmm(self.hours[0])}-{_hhmm(self.hours[1])}"
        if self.max_cpu_share is not None:
            doc["max_cpu_share"] = self.max_cpu_share
        if self.require_labels:
            doc["require_labels"] = dict(self.require_labels)
        if self.when is not None:
            doc["when"] = self.when.source
        if self.rank is not None:
            doc["rank"] = self.rank.source
        if self.reason:
            doc["reason"] = self.reason
        return doc

    def decide(self, job: Mapping[str, Any], task: Mapping[str, Any], node: Mapping[str, Any], now: float,
               foreign_cpu: int = 0, ev: Evaluator | None = None) -> Finding:
        """Accept or decline one offer; a decline names the rule that refused."""

        def no(why: str) -> Finding:
            text = f"{self.reason}: {why}" if self.reason else why
            return Finding("node", self.name, self.version, False, text)

        domain = job.get("domain") or task.get("domain")
        if self.domains is not None and domain not in self.domains:
            return no(f"jobs of domain {domain!r} are not accepted here (accepted: {', '.join(self.domains)})")
        if self.hours is not None:
            moment = _dt.datetime.fromtimestamp(now, _dt.UTC)
            minute = moment.hour * 60 + moment.minute
            start, end = self.hours
            inside = start <= minute < end if start <= end else (minute >= start or minute < end)
            if not inside:
                return no(f"offers are accepted only {_hhmm(start)}-{_hhmm(end)} UTC (now {_hhmm(minute)})")
        labels = {**(job.get("labels") or {}), **(task.get("labels") or {})}
        for key, wanted in sorted(self.require_labels.items()):
            if labels.get(key) != wanted:
                return no(f"the job must carry label {key}={wanted}")
        problem = self.share_problem(domain, int(task.get("cpu") or 0), node.get("domain"), int(node.get("cpu") or 0),
                                     foreign_cpu)
        if problem is not None:
            return no(problem)
        if self.when is not None:
            when = self.when
            # Only the fields the rule reads are handed to CEL (each offer brings new maps, and a
            # map's conversion costs per key): the same answer, a fraction of the work.
            ev = (ev or Evaluator()).bind(job=read_by(when, "job", job), task=read_by(when, "task", task),
                                          node=read_by(when, "node", node),
                                          now=time_context(now) if "now" in when.variables else None)
            ok, problem = ev.truth(when)
            if not ok:
                return no(f"{self.when.source} is false" if ok is False else
                          f"{self.when.source} could not be evaluated ({problem})")
        return Finding("node", self.name, self.version, True, "")

    def share_problem(self, domain: str | None, cpu: int, node_domain: str | None, node_cpu: int,
                      foreign_cpu: int) -> str | None:
        """Why a job of `domain` asking `cpu` would take foreign jobs past `max_cpu_share` of the
        node's CPU, with `foreign_cpu` already held by other domains; None when it would not. The
        agent's `decide` and the scheduler's `policy_share` filter both ask this."""
        if self.max_cpu_share is None or domain == node_domain:
            return None
        asked = cpu + foreign_cpu
        if node_cpu and asked > self.max_cpu_share * node_cpu:
            return (f"foreign jobs may use at most {self.max_cpu_share:g} of this machine's CPU "
                    f"({asked}m of {node_cpu}m asked)")
        return None

    def score(self, job: Mapping[str, Any], task: Mapping[str, Any], node: Mapping[str, Any], now: float,
              ev: Evaluator | None = None) -> float | None:
        if self.rank is None:
            return None
        ev = (ev or Evaluator()).bind(job=job, task=task, node=node, now=time_context(now))
        return ev.number(self.rank)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_owner_policy(doc: Any, *, version: int = 1) -> OwnerPolicy:
    """The agent's `--policy FILE` (loaded YAML); raise PolicyInvalid naming every bad field."""
    if doc is None:
        return OwnerPolicy(version=version)
    if not isinstance(doc, Mapping):
        raise PolicyInvalid("owner", ["the node policy must be a map (domains, hours, max_cpu_share, ...)"])
    problems: list[str] = []
    accept = doc.get("accept", doc)
    if not isinstance(accept, Mapping):
        raise PolicyInvalid("owner", ["accept must be a map"])
    merged = {**{k: v for k, v in doc.items() if k != "accept"}, **accept}
    for key in merged:
        if key not in OWNER_KEYS and key not in ("name", "version"):
            problems.append(f"unknown key {key!r} (known: {', '.join(OWNER_KEYS)})")
    domains = merged.get("domains")
    if domains is not None and (not isinstance(domains, list) or not all(isinstance(d, str) for d in domains)):
        problems.append("domains must be a list of domain names")
        domains = None
    hours = None
    raw_hours = merged.get("hours")
    if raw_hours is not None:
        match = _HOURS.match(str(raw_hours))
        if not match:
            problems.append(f"hours must look like 08:00-18:00 (UTC), got {raw_hours!r}")
        else:
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
                problems.append(f"hours {raw_hours!r} is not a time range")
            else:
                hours = (h1 * 60 + m1, h2 * 60 + m2)
    share = merged.get("max_cpu_share")
    max_share = _share(share, "max_cpu_share", problems) if share is not None else None
    labels = merged.get("require_labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        problems.append("require_labels must map label names to values")
        labels = {}
    rules: dict[str, Rule | None] = {}
    for key in ("when", "rank"):
        source = merged.get(key)
        rules[key] = None
        if source is not None:
            try:
                rules[key] = compile_rule(source, key)
            except ValidationError as exc:
                problems.append(str(exc))
    on_change = merged.get("on_change", "finish")
    if on_change not in ("finish", "stop"):
        problems.append(f"on_change must be finish or stop, got {on_change!r}")
    grace_s: float | None = OWNER_CHECKPOINT_GRACE_S
    raw_grace = merged.get("checkpoint_grace")
    if raw_grace is not None:
        zero = None if isinstance(raw_grace, bool) else _DURATION.match(str(raw_grace))
        if zero is not None and float(zero.group(1)) == 0:
            grace_s = 0.0  # stop at once, without asking for a checkpoint
        else:
            grace_s = _duration(raw_grace, "checkpoint_grace", problems)
    reason = merged.get("reason", "")
    advertise = merged.get("advertise", True)
    if not isinstance(advertise, bool):
        problems.append(f"advertise must be true or false, got {advertise!r}")
    if problems:
        raise PolicyInvalid("owner", problems)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return OwnerPolicy(tuple(domains) if domains is not None else None, hours, max_share,
                       {str(k): str(v) for k, v in labels.items()}, rules["when"], rules["rank"], str(on_change),
                       str(reason or ""), version, str(merged.get("name") or "owner"),
                       grace_s if grace_s is not None else OWNER_CHECKPOINT_GRACE_S, advertise is not False, digest)


def advertised_owner_policy(doc: Any) -> OwnerPolicy | None:
    """The owner policy a node advertised (its `facts.owner_policy`, `OwnerPolicy.advertised()`),
    as the coordinator's scheduler uses it; None when there is none or it does not parse (the
    agent still answers every offer itself, so a policy the coordinator cannot read only costs
    declines)."""
    if not isinstance(doc, Mapping):
        return None
    version = doc.get("version", 1)
    try:
        return parse_owner_policy({k: v for k, v in doc.items() if k != "version"},
                                  version=version if isinstance(version, int) else 1)
    except ValidationError:
        return None


def answer_bytes(answer: Mapping[str, Any]) -> bytes:
    """The bytes a node signs for its answer to an offer (canonical JSON: sorted keys, no spaces),
    so anyone holding the node's public key can check it later from the audit chain."""
    return json.dumps(answer, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
