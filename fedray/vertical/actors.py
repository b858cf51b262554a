"""Thin Ray actors around the pure party cores in ``fedray.vertical.protocol``.

Each party actor reads its own file where it runs (only a path is sent), so raw features and
labels never enter the object store. The driver actor runs the same ``Trainer`` loop as the
in-process tests, through ``RayTransport``: it forwards ObjectRefs from one party to the next
and only fetches what it must add (the providers' score ciphertexts) or route (PSI positions,
code blocks).
"""
from __future__ import annotations

from typing import Any, Optional

import ray

from fedray.vertical.protocol import BUSINESS, BusinessCore, Message, ProviderCore, Settings, Trainer
from fedray.vertical.scoring import BoostScoringBusiness, BoostScoringProvider, ScoringBusiness, ScoringProvider
from fedray.vertical.secureboost import BoostBusiness, BoostProvider, BoostTrainer


@ray.remote
class BusinessParty(BusinessCore):
    def __init__(self, path: str, settings: Settings) -> None:
        core = BusinessCore.from_file(path, settings)
        self.__dict__.update(core.__dict__)


@ray.remote
class DataProvider(ProviderCore):
    def __init__(self, name: str, path: str, settings: Settings, shard: tuple[int, int] = (0, 1)) -> None:
        core = ProviderCore.from_file(name, path, settings, shard)
        self.__dict__.update(core.__dict__)


def _resolve(x: Any) -> Any:
    if isinstance(x, ray.ObjectRef):
        return ray.get(x)
    return x


class RayTransport:
    """Calls actor methods; results stay ObjectRefs until ``get``. ``record`` fetches every message."""

    def __init__(self, handles: dict[str, Any], record: bool = False) -> None:
        self.handles = handles
        self.record = record
        self.messages: list[Message] = []

    def call(self, party: str, method: str, *args: Any) -> Any:
        ref = getattr(self.handles[party], method).remote(*args)
        if self.record:
            self.messages.append(Message("driver", party, method, tuple(_resolve(a) for a in args)))
            self.messages.append(Message(party, "driver", method, ray.get(ref)))
        return ref

    def get(self, handles: list) -> list:
        return ray.get(list(handles))


@ray.remote
class VerticalDriver:
    """Coordinates and adds ciphertexts; never holds a secret key."""

    def __init__(self, business: Any, providers: dict[str, list[Any]], settings: Settings, seed: int = 0,
                 record: bool = False) -> None:
        """``providers``: {party: [actor handle of each worker]} (one per ``provider_workers``)."""
        handles = {BUSINESS: business}
        groups = {}
        for party, workers in providers.items():
            keys = [party] if len(workers) == 1 else [f"{party}:{k}" for k in range(len(workers))]
            handles.update(zip(keys, workers))
            groups[party] = keys
        self.transport = RayTransport(handles, record)
        if settings.model == "secureboost":
            self.trainer = BoostTrainer(self.transport, groups, settings)
        else:
            self.trainer = Trainer(self.transport, groups, settings, seed)

    def setup(self) -> dict:
        return self.trainer.setup()

    def iteration(self) -> dict:
        return self.trainer.iteration()

    def stopping(self) -> tuple[bool, int]:
        """(stop after the last iteration, the iteration with the best validation loss)."""
        return self.trainer.stop, self.trainer.stopping.best_iteration

    def save(self, directory: str) -> dict:
        return self.trainer.save(directory)

    def state(self) -> dict:
        """The loop's checkpoint state (iteration count, batch generator); no party's weights."""
        return self.trainer.state()

    def load_state(self, state: dict) -> None:
        self.trainer.load_state(state)

    def messages(self) -> list[Message]:
        return self.transport.messages

    def context_is_private(self) -> Optional[bool]:
        """Whether the driver's CKKS context holds a secret key (None: it loaded none, as in SecureBoost)."""
        agg = getattr(self.trainer, "agg", None)
        return None if agg is None or agg.ctx is None else agg.ctx.is_private()


@ray.remote
class ScoringBusinessParty(ScoringBusiness):
    """The business party for joint scoring: reads its own model and new file where it runs."""


@ray.remote
class ScoringProviderParty(ScoringProvider):
    """A provider for joint scoring: reads its own model and new file where it runs."""


@ray.remote
class BoostBusinessParty(BoostBusiness):
    """The business party of a SecureBoost run: reads its own file where it runs."""

    def __init__(self, path: str, settings: Settings, seed: int = 0) -> None:
        core = BoostBusiness.from_file(path, settings, seed)
        self.__dict__.update(core.__dict__)


@ray.remote
class BoostProviderParty(BoostProvider):
    """A provider (worker) of a SecureBoost run: reads its own file where it runs."""

    def __init__(self, name: str, path: str, settings: Settings, shard: tuple[int, int] = (0, 1)) -> None:
        core = BoostProvider.from_file(name, path, settings, shard)
        self.__dict__.update(core.__dict__)


@ray.remote
class BoostScoringBusinessParty(BoostScoringBusiness):
    """The business party scoring with a SecureBoost run's trees."""


@ray.remote
class BoostScoringProviderParty(BoostScoringProvider):
    """A provider scoring with a SecureBoost run's trees: its own split lookup table."""
