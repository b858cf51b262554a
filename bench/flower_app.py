"""Flower's side of bench/vs_flower.py: the same federated job run by Flower's simulation engine.

It runs in Flower's own virtual environment (vs_flower.py creates it), with the fedray checkout on PYTHONPATH for
the task's model, data and local training: fedray.tasks and fedray.engine.streams are pure modules (no Ray), so
Flower's ClientApp calls exactly the code a fedray device runs, seeded by the same (seed, round, device) streams.
What Flower brings is everything around it: its simulation engine on its own Ray, messages, Context.state (where a
device's private parameters live between rounds), node sampling and FedAvg.

Run: python -c "from bench.flower_app import main; main()" SPEC.json  (cwd and PYTHONPATH: the checkout)
SPEC holds the fedray config as plain data, the rounds, the CPUs to use and the output file. The output gets the
wall-clock times the rounds ended at, when the first began, and the final metrics on the devices fedray evaluates.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedAvgM
from flwr.simulation import run_simulation

from fedray.core import selection
from fedray.engine.devices import initial_params
from fedray.engine.engine import evaluation_devices, weighted_metrics
from fedray.engine.streams import Stream, stream, torch_seed
from fedray.tasks import EvalContext, Evaluation, Task, TrainContext, build_task, check_model

PRIVATE_KEY = "private"  # the Context.state record holding a device's private parameters


@dataclass(frozen=True)
class Spec:
    """What the bench asks for: the fedray config (plain data), rounds, CPUs and the output file."""

    config: dict[str, Any]
    rounds: int
    cpus: int
    out: str


@dataclass
class Job:
    """One process's task, its per-device data, a working model and the names of the shared parameters."""

    spec: Spec
    task: Task
    data: Sequence[Any]
    model: torch.nn.Module
    shared: list[str]


@lru_cache(maxsize=None)
def job() -> Job:
    """The task and its data, built once per process (the ServerApp's, and each Ray actor's)."""
    torch.set_num_threads(1)  # one CPU per ClientApp actor, as fedray gives one per device host
    spec = Spec(**json.loads(Path(os.environ["FEDRAY_FLOWER_SPEC"]).read_text()))
    task = build_task(spec.config["task"])
    data = task.load(int(spec.config["seed"]))
    shared = check_model(task)
    return Job(spec, task, data, task.model(1.0), shared)


def _private(j: Job, device: int, context: Context) -> dict[str, torch.Tensor]:
    """A device's private parameters from its Context.state, first drawn from the device's seed as fedray does."""
    if PRIVATE_KEY in context.state:
        record = context.state[PRIVATE_KEY]
        return {name: torch.from_numpy(record[name].numpy()) for name in record}
    seed = int(j.spec.config["seed"])
    torch.default_generator.manual_seed(torch_seed(seed, Stream.PRIVATE, device))
    model = j.task.model(1.0) if type(j.task).init_private is Task.init_private else j.model
    j.task.init_private(model, device, stream(seed, Stream.PRIVATE, device))
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in j.task.private}


def _load(j: Job, message: Message, device: int, context: Context) -> torch.nn.Module:
    """The working model holding the message's global weights and the device's private parameters."""
    arrays = message.content["arrays"]
    state = {name: torch.from_numpy(arrays[name].numpy()) for name in j.shared}
    state.update(_private(j, device, context))
    j.model.load_state_dict(state, strict=True)
    return j.model


client_app = ClientApp()


@client_app.train()
def train(message: Message, context: Context) -> Message:
    """Local training of one device from the global weights: the task's own train, seeded as a fedray device."""
    j, device = job(), int(context.node_config["partition-id"])
    round_ = int(message.content["config"]["server-round"]) - 1  # Flower counts rounds from 1, fedray from 0
    seed, t = int(j.spec.config["seed"]), j.spec.config["train"]
    model = _load(j, message, device, context)
    ctx = TrainContext(round_, device, t["local_steps"] if t["local_epochs"] is None else None, t["local_epochs"],
                       t["batch_size"], t["lr"], stream(seed, Stream.TRAIN, round_, device))
    torch.default_generator.manual_seed(torch_seed(seed, Stream.TORCH, round_, device))
    result = j.task.train(model, j.data[device], ctx)
    state = model.state_dict()
    context.state[PRIVATE_KEY] = ArrayRecord({k: Array(state[k].detach().numpy().copy()) for k in j.task.private})
    arrays = ArrayRecord({k: Array(state[k].detach().numpy().copy()) for k in j.shared})
    metrics = MetricRecord({"num-examples": int(result.samples), "train_loss": float(result.loss)})
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)


@client_app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """One device's metrics under the global weights and its own private parameters, seeded as in fedray."""
    j, device = job(), int(context.node_config["partition-id"])
    round_ = int(message.content["config"]["server-round"]) - 1
    seed = int(j.spec.config["seed"])
    model = _load(j, message, device, context)
    torch.default_generator.manual_seed(torch_seed(seed, Stream.TORCH, round_, device))
    ev = j.task.evaluate(model, j.data[device], EvalContext(round_, device, stream(seed, Stream.EVAL, round_, device)))
    metrics = MetricRecord({"num-examples": int(ev.samples), **{k: float(v) for k, v in ev.metrics.items()}})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=message)


@client_app.query()
def query(message: Message, context: Context) -> Message:
    """The device id (partition) behind this node, so the server can list nodes in a seed-stable order."""
    partition = MetricRecord({"partition-id": int(context.node_config["partition-id"])})
    return Message(content=RecordDict({"metrics": partition}), reply_to=message)


class OrderedGrid(Grid):
    """The simulation's Grid, listing nodes by device id.

    Flower's simulation draws random node ids for every run and keeps them in a set, so seeding `random` alone does
    not fix which nodes FedAvg samples; listed in device order, the same seed samples the same devices every run.
    """

    def __init__(self, grid: Grid, ordered: list[int]):
        self.grid, self.ordered = grid, ordered

    def set_run(self, run: Any) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.ordered)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=timeout)


def _ask_all(grid: Grid, nodes: Iterable[int], kind: str, content: RecordDict) -> list[Message]:
    """Send one message of a kind to every node and return the replies, failing loudly on any error reply."""
    replies = list(grid.send_and_receive([Message(content=content, dst_node_id=n, message_type=kind) for n in nodes]))
    errors = [r.error for r in replies if r.has_error()]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(replies)} {kind} replies failed; first: {errors[0]}")
    return replies


def make_strategy(j: Job, n_devices: int) -> FedAvg:
    """Flower's FedAvg sampling K of n nodes per round; FedAvgM without momentum when the server step is not 1.

    fedray's FedAvg steps params + server_lr * (weighted mean delta); with momentum 0, Flower's FedAvgM computes the
    same (old - lr * (old - weighted mean)), and with a server_lr of 1 both are plain FedAvg.
    """
    s = j.spec.config["strategy"]
    if (s["name"] or "fedavg") != "fedavg" or s["target"]:
        raise SystemExit(f"bench/flower_app.py runs Flower's FedAvg only; the config asks for {s['name'] or s['target']}")
    server_lr = float(s["server_lr"] or j.task.server_lr)
    k = selection.participant_count(j.spec.config["train"]["participants"], n_devices)
    sampling = dict(fraction_train=k / n_devices, fraction_evaluate=0.0, min_train_nodes=k, min_available_nodes=n_devices)
    return FedAvg(**sampling) if server_lr == 1.0 else FedAvgM(**sampling, server_learning_rate=server_lr, server_momentum=0.0)


server_app = ServerApp()


@server_app.main()
def server(grid: Grid, context: Context) -> None:
    """Seeded FedAvg for the spec's rounds, then one evaluation of the devices fedray evaluates; timings and metrics out."""
    j = job()
    seed, rounds = int(j.spec.config["seed"]), j.spec.rounds
    random.seed(seed)  # Flower's node sampling draws from `random`
    nodes = list(grid.get_node_ids())
    while len(nodes) < len(j.data):  # the simulation registers its nodes as it starts
        time.sleep(0.1)
        nodes = list(grid.get_node_ids())
    asked = time.time()
    replies = _ask_all(grid, nodes, MessageType.QUERY, RecordDict({"config": ConfigRecord()}))
    ordering_s = time.time() - asked  # the bench's own plumbing for seeded sampling, not part of Flower's set-up
    by_device = sorted((int(r.content["metrics"]["partition-id"]), r.metadata.src_node_id) for r in replies)
    ordered = OrderedGrid(grid, [node for _, node in by_device])
    params = initial_params(j.task, j.shared, seed, 0, 1.0)  # fedray's initial global model of group 0
    marks: list[float] = []  # evaluate_fn runs before round 1 and after every round: the round boundaries

    def mark(server_round: int, arrays: ArrayRecord) -> None:
        marks.append(time.time())

    initial = ArrayRecord({k: Array(v) for k, v in params.items()})
    result = make_strategy(j, len(nodes)).start(grid=ordered, initial_arrays=initial, num_rounds=rounds, evaluate_fn=mark)
    final = RecordDict({"arrays": result.arrays, "config": ConfigRecord({"server-round": rounds})})
    evaluated = evaluation_devices(len(nodes), int(j.spec.config["train"]["eval_users"]), seed)
    evals = _ask_all(ordered, [ordered.ordered[d] for d in evaluated], MessageType.EVALUATE, final)
    metrics = weighted_metrics([Evaluation(int(r.content["metrics"]["num-examples"]),
                                           {k: float(v) for k, v in r.content["metrics"].items() if k != "num-examples"})
                                for r in evals])
    Path(j.spec.out).write_text(json.dumps({"first_round_at": marks[0], "round_ends": marks[1:], "ordering_s": ordering_s,
                                              "metrics": metrics, "evaluated": len(evals)}))


def main(argv: list[str] | None = None) -> None:
    """Run the spec's job in Flower's simulation engine, one node per device, one CPU per ClientApp actor."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: flower_app SPEC.json")
    os.environ["FEDRAY_FLOWER_SPEC"] = str(Path(argv[0]).resolve())  # Ray's workers inherit it
    j = job()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(j.data),
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": j.spec.cpus, "include_dashboard": False}})
    if not Path(j.spec.out).is_file():
        raise SystemExit("Flower's ServerApp did not finish (see the log above)")
