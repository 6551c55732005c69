"""Running tasks on this node: leases in, processes and warm workers, reports out.

How the agent drives it (see polyfabric/agent/main.py):

    outbox = Outbox()
    runner = TaskRunner(data_dir=..., slots=capacity.slots, capacity=capacity, outbox=outbox,
                        pythonpath=[...], kill_grace_s=5.0).start()
    sync = Sync(runner, outbox, lease_client, report_client).start()   # two threads, two connections
    ...
    runner.stop_accepting(); sync.stop_leasing()                     # on SIGTERM
    runner.wait_idle(grace) or runner.interrupt_all()                 # finish or stop what runs
    sync.flush(timeout); sync.stop(); runner.close()

Modules: lease (wire format), workspace, process (command tasks), workers (function tasks on
warm workers; polyfabric/agent/worker.py is the worker's side), streams (output -> log
chunks), outbox (pending reports), task_runner (attempt lifecycle), sync (lease and report
loops), groups (process-group killing), interrupt (stop requests).
"""

from polyfabric.agent.runner.lease import Lease, LeaseInvalid, Outcome
from polyfabric.agent.runner.outbox import Outbox
from polyfabric.agent.runner.sync import LeasePoller, Reporter, Sync
from polyfabric.agent.runner.task_runner import TaskRunner
from polyfabric.agent.runner.workers import WorkerPool

__all__ = ["Lease", "LeaseInvalid", "LeasePoller", "Outbox", "Outcome", "Reporter", "Sync", "TaskRunner",
           "WorkerPool"]
