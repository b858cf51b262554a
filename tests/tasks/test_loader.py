"""Building the user's task from config: every bad target is a TaskError naming it, raised before Ray starts."""
import textwrap

import pytest

from fedray.tasks import Task, TaskError, build_task, check_model

GOOD = '''
import torch
from fedray.tasks import Evaluation, Task, TrainResult

class Good(Task):
    def __init__(self, devices=3, hidden=4):
        self.devices, self.hidden = devices, hidden
    def load(self, seed):
        return list(range(self.devices))
    def model(self, width):
        return torch.nn.Linear(2, self.hidden)
    def train(self, model, data, ctx):
        return TrainResult(1, 0.0)
    def evaluate(self, model, data, ctx):
        return Evaluation(1, {})

class WrongArity(Good):
    def train(self, model, data):
        return TrainResult(1, 0.0)

class Missing(Task):
    def load(self, seed):
        return [0]

class WithCounter(Good):
    def model(self, width):
        m = torch.nn.Linear(2, 2)
        m.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        return m

class PrivateTypo(Good):
    private = ("userr",)

class NotATask:
    pass

def broken():
    raise RuntimeError("boom")
'''


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A user's module in the working directory, as `fedray submit` ships it."""
    (tmp_path / "user_tasks.py").write_text(textwrap.dedent(GOOD))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_tasks"


def test_a_task_in_the_working_directory_is_built_with_its_keyword_arguments(module):
    task = build_task({"target": f"{module}:Good", "devices": 5})
    assert isinstance(task, Task) and len(task.load(0)) == 5
    assert check_model(task) == ["weight", "bias"]


@pytest.mark.parametrize("section, message", [
    ({}, "task.target is not set"),
    ({"target": "no_colon"}, "expected 'package.module:Name'"),
    ({"target": "nowhere_module:X"}, "no module named 'nowhere_module'"),
    ({"target": "user_tasks:Absent"}, "has no attribute 'Absent'"),
    ({"target": "user_tasks:NotATask"}, "is not a subclass of fedray.tasks.Task"),
    ({"target": "user_tasks:Missing"}, "does not implement model()"),
    ({"target": "user_tasks:WrongArity"}, "WrongArity.train takes 2 arguments after self, fedray calls it with 3"),
    ({"target": "user_tasks:Good", "devicez": 3}, "do not fit Good()"),
])
def test_each_bad_target_names_itself_and_the_problem(module, section, message):
    with pytest.raises(TaskError) as err:
        build_task(section)
    assert message in str(err.value)
    assert section.get("target", "task.target") in str(err.value)


def test_models_must_hold_float_tensors_and_name_their_private_keys(module):
    with pytest.raises(TaskError, match=r"not float: steps \(torch.int64\)"):
        check_model(build_task({"target": f"{module}:WithCounter"}))
    with pytest.raises(TaskError, match=r"private names \['userr'\]"):
        check_model(build_task({"target": f"{module}:PrivateTypo"}))


def test_the_cli_stops_with_exit_2_before_ray_starts(module, tmp_path, capsys, monkeypatch):
    from fedray import runtime
    from fedray.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a task that cannot run")

    monkeypatch.setattr(runtime, "start", no_ray)
    config = tmp_path / "job.yaml"
    config.write_text(f"task: {{target: '{module}:WithCounter'}}\ntrain: {{rounds: 1}}\n")
    assert main(["run", str(config), f"run_dir={tmp_path / 'run'}"]) == 2
    assert "WithCounter" in "".join(capsys.readouterr())
    assert not (tmp_path / "run").exists()
