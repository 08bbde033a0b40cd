"""Why a network fails to program on this host: the error the agent reports in its ack
(bounded to what the server accepts) and the retry schedule of a failing network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from l2pop.datapath.abc import DatapathError
from l2pop.model import NetworkDelta
from l2pop.wire.channel import ACK_ERROR_TEXT_MAX, ACK_NETWORK_ID_MAX, AckError

#: the VNI a failing network is counted with in the applied digest (no desired state has it)
DAMAGED_VNI = 0


@dataclass(frozen=True, slots=True)
class NetworkError:
    """Why a network is failing: the entry the datapath named (None when it named none),
    its message, and how many attempts in a row failed."""

    network_id: str
    vni: int
    entry: str | None
    message: str
    attempts: int

    def wire(self) -> AckError:
        """The ack's form, cut to the bounds the server accepts."""
        return AckError(
            network_id=self.network_id[:ACK_NETWORK_ID_MAX],
            vni=self.vni if 0 <= self.vni < 2**24 else DAMAGED_VNI,
            entry=None if self.entry is None else cut(self.entry),
            message=cut(self.message),
            attempts=max(1, min(self.attempts, 2**31 - 1)),
        )


@dataclass(frozen=True, slots=True)
class Failing:
    error: NetworkError
    due: float  # clock time of the next retry


def cut(text: str, limit: int = ACK_ERROR_TEXT_MAX) -> str:
    """One printable line of at most ``limit`` characters (so a full ack stays small)."""
    text = "".join(c if c.isprintable() else " " for c in " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: Exception, deltas: Sequence[NetworkDelta]) -> tuple[str | None, str]:
    """(entry, message) of a datapath error on one network's ``deltas``: the first entry it
    named, with the value it was to take ("fdb MAC -> VTEP", "neigh IP -> MAC"), and what the
    datapath said about that entry."""
    entry = None
    if isinstance(exc, DatapathError) and exc.failures:
        entry = exc.failures[0][0]
        kind, _, key = entry.partition(" ")
        for d in deltas:
            target = {"fdb": d.fdb_add, "neigh": d.neigh_add}.get(kind, {}).get(key)
            if target is not None:
                entry = f"{entry} -> {target}"
                break
        message = exc.failures[0][2] or str(exc)
        if len(exc.failures) > 1:
            message += f" (and {len(exc.failures) - 1} more entries failed)"
        return cut(entry), cut(message)
    if isinstance(exc, OSError) and exc.strerror:
        return None, cut(f"{type(exc).__name__}: {exc.strerror}")
    return None, cut(f"{type(exc).__name__}: {exc}")
