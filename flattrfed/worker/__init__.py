"""Background work: the loop that claims due work rows and runs their handlers."""

from flattrfed.worker.loop import PermanentFailure, RetryLater, Worker, WorkHandler, enqueue

__all__ = ["PermanentFailure", "RetryLater", "WorkHandler", "Worker", "enqueue"]
