"""Tasks: the user's model, data, training and evaluation behind one small API (fedray.tasks.base)."""
from fedray.tasks.base import EvalContext, Evaluation, Task, TrainContext, TrainResult
from fedray.tasks.loader import TaskError, TaskFacts, build_task, check_model, task_facts

__all__ = ["EvalContext", "Evaluation", "Task", "TaskError", "TaskFacts", "TrainContext", "TrainResult", "build_task", "check_model", "task_facts"]
