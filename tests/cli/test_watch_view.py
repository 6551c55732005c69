"""The `--watch` live view on a terminal: a progress bar and the running tasks, drawn with rich."""

from __future__ import annotations

from rich.console import Console

from polyfabric.cli.run import WatchView


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _page(status: str, counts: dict[str, int], *events: tuple[str, str, int]) -> dict:
    return {"job": {"id": "j-1", "name": "shard-stats", "status": status, "counts": counts,
                    "total": sum(counts.values())},
            "events": [{"seq": i, "at": 0, "task_id": f"t-{key}", "key": key, "status": st, "attempt": attempt,
                        "node_id": "n-a" if attempt else None} for i, (key, st, attempt) in enumerate(events)],
            "next": len(events)}


def _draw(view: WatchView, height: int = 24) -> str:
    console = Console(record=True, width=100, force_terminal=True, color_system=None)
    console.print(view.renderable(height))
    return console.export_text()


def test_the_view_shows_progress_running_tasks_first_then_the_latest_finished():
    clock = Clock()
    view = WatchView("j-1", clock=clock)
    view.update(_page("running", {"succeeded": 1, "running": 2, "waiting": 7},
                      ("split", "running", 1), ("split", "succeeded", 1), ("work[10]", "running", 1),
                      ("work[2]", "running", 1)))
    clock.now += 4
    text = _draw(view)
    lines = text.splitlines()
    assert lines[0].startswith("shard-stats j-1  running  4s")
    assert "1/10 done" in lines[1] and "running 2" in lines[1] and "failed 0" in lines[1]
    assert "━" in lines[1]  # the bar
    assert [line.split()[1] for line in lines[2:5]] == ["work[2]", "work[10]", "split"]  # natural order
    assert "running     attempt 1  on n-a  4s" in lines[2]
    assert "succeeded" in lines[4]


def test_a_busy_job_shows_only_what_fits_and_says_how_many_more_run():
    view = WatchView("j-1")
    events = [(f"work[{i}]", "running", 1) for i in range(50)]
    view.update(_page("running", {"running": 50}, *events))
    text = _draw(view, height=12)
    task_lines = text.splitlines()[2:]
    assert len(task_lines) == 9
    assert task_lines[-1].strip() == "… 42 more running"


def test_failures_and_the_final_status_show():
    view = WatchView("j-1")
    view.update(_page("failed", {"succeeded": 3, "failed": 1}, ("boom", "running", 2), ("boom", "failed", 2)))
    text = _draw(view)
    assert "failed" in text.splitlines()[0]
    assert "4/4 done" in text and "failed 1" in text
    assert "✗ boom" in text
    assert view.counts() == (4, 4, 0, 1)
