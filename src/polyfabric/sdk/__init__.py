"""Author workflows in Python and run them on a polyfabric coordinator.

Why an SDK beside YAML: a workflow built in code can be generated, parameterised and tested
like any other code, and its mistakes show in the author's own process. The builders produce
exactly the document a YAML file would (a dict), and `Client.submit` validates it locally with
the coordinator's own parser (`polyfabric.workflow.spec.parse_workflow`) before sending it, so
every problem is listed at once (`WorkflowInvalid`) without a round trip.

    from polyfabric.sdk import ITEM, Client, Workflow

    wf = Workflow("shard-stats", params={"shards": 8})
    split = wf.command("split", ["python3", "-c", "..."])
    work = wf.function("work", "examples.stats:process", args={"shard": ITEM}, foreach=split.result,
                       depends_on=[split], max_parallel=4, retries=2, timeout="30s")
    wf.command("report", ["sh", "-c", "echo done"], depends_on=[work], when="size(tasks.work.result) > 0")
    print(wf.to_yaml())                     # the same workflow as a file for `polyfabric run`

    with Client.from_env() as client:       # POLYFABRIC_URL/TOKEN or the config file, like the CLI
        run = client.submit(wf, params={"shards": 16})
        run.wait()
        print(run.result())

References: `task.result` / `task.status` and `wf.param("shards")` are `Expr`s. Where a CEL
expression is expected (`foreach`, `when`) they stand for themselves (`tasks.split.result`);
inside `command`, `args` and `env` they become templates (`{{ tasks.split.result }}`), and `ITEM`
is `{{ item }}`, a foreach task's current item. A task referred to through an `Expr` that is not
already upstream is added to `depends_on` for you.

Function tasks: `wf.function(name, "pkg.module:attr", args=...)` or pass the function itself
(optionally decorated with `@task(retries=2, timeout="30s")` to carry defaults). The node does
not receive your code: its agent imports `pkg.module` by name in a warm worker and calls
`attr(**args)`, so the module must be importable on every node that may run the task —
installed in the agent's Python environment, or in a directory given to the agent with
`--pythonpath DIR` (the node owner's choice), or in an absolute directory on the node named as
the task's `workdir=`. Modules are cached by the agent's warm workers: a changed module is seen
after the agent restarts. A function defined in the script you are running (`__main__`), inside
another function, or a lambda has no importable name and is refused at build time. Arguments
and the return value must be JSON values.
"""

from polyfabric.client.errors import ApiError, ClientError, CoordinatorUnreachable
from polyfabric.client.jobs import WaitTimeout, WorkflowRejected
from polyfabric.sdk.client import Client, JobFailed, JobResult, Run
from polyfabric.sdk.context import CheckpointError, NotInTask, TaskContext, task_context
from polyfabric.sdk.functions import TaskFunction, function_ref, task
from polyfabric.sdk.workflow import ITEM, Expr, Task, Workflow
from polyfabric.workflow.spec import WorkflowInvalid

__all__ = [
    "ITEM",
    "ApiError",
    "CheckpointError",
    "Client",
    "ClientError",
    "CoordinatorUnreachable",
    "Expr",
    "JobFailed",
    "JobResult",
    "NotInTask",
    "Run",
    "Task",
    "TaskContext",
    "TaskFunction",
    "WaitTimeout",
    "Workflow",
    "WorkflowInvalid",
    "WorkflowRejected",
    "function_ref",
    "task",
    "task_context",
]
