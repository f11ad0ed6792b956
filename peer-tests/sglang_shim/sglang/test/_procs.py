"""Process helpers (Linux /proc based, no psutil needed)."""

import os
import signal
import time


def _children(pid: int) -> list:
    """Direct children of `pid`, from /proc/<pid>/task/*/children."""
    found = []
    task_dir = f"/proc/{pid}/task"
    try:
        tasks = os.listdir(task_dir)
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"{task_dir}/{tid}/children") as f:
                found.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return found


def _descendants(pid: int) -> list:
    out, stack = [], [pid]
    while stack:
        for child in _children(stack.pop()):
            out.append(child)
            stack.append(child)
    return out


def _gone(pid: int) -> bool:
    """True once `pid` has exited (absent, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except OSError:
        return True


def kill_process_tree(parent_pid, include_parent: bool = True, skip_pid=None, wait_timeout: float = 15.0):
    """Kill `parent_pid` and all its descendants with SIGKILL, then wait until they are gone
    (so the port they listened on is free for the next server)."""
    if parent_pid is None:
        return
    parent_pid = int(parent_pid)
    victims = _descendants(parent_pid)
    if include_parent:
        victims.append(parent_pid)
    for pid in victims:
        if skip_pid is not None and pid == skip_pid:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + wait_timeout
    for pid in victims:
        while not _gone(pid) and time.time() < deadline:
            time.sleep(0.05)
        # Reap our own children so they do not linger as zombies.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        except OSError:
            pass
