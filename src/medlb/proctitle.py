"""The name `ps`, `top` and `pidof` show for medlb's processes.

Started as `python -m medlb` or through the `medlb` script, every medlb process would
be called `python`: `pidof medlb` would find nothing and the workers would look like
any other Python program. The title is written over the process's command line and
its kernel name (/proc/PID/comm).
"""

from __future__ import annotations

#: The control process: what `pidof medlb` finds.
CONTROL = "medlb"


def worker_title(index: int) -> str:
    """Not `medlb` itself, so that `pidof medlb` names the control process only."""
    return f"medlb: worker {index}"


def set_title(title: str) -> None:
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - a dependency; the name is cosmetic, never fatal
        return
    setproctitle(title)
