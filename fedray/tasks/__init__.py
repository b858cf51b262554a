"""Tasks: the user's model, data, training and evaluation behind one small API (fedray.tasks.base)."""
from fedray.tasks.base import EvalContext, Evaluation, Task, TrainContext, TrainResult
from fedray.tasks.loader import TaskError, build_task, check_model

__all__ = ["EvalContext", "Evaluation", "Task", "TaskError", "TrainContext", "TrainResult", "build_task", "check_model"]
