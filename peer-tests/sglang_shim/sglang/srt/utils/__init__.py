"""`sglang.srt.utils` names used by the peer test files."""

from sglang.test._procs import kill_process_tree

__all__ = ["kill_process_tree"]
