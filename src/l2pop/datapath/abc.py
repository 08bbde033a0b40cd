"""The Datapath interface: what an agent needs from the thing that forwards packets.

Semantics (every implementation; the memory fake is the reference):

* ``dump()`` reads back what is actually programmed, for every network this datapath owns
  (linux: only devices with its prefixes; the network id is kept on the device). It never
  reports entries it does not own. A network whose devices are damaged (missing, down,
  misconfigured) is reported with VNI 0 and no entries: no desired state has VNI 0, so a
  reconcile rebuilds it, or removes it when the host is no longer a member.
* ``apply(deltas)`` programs ``NetworkDelta``s in order. A delta for a network the datapath
  does not have creates it (bridge + vxlan device with the delta's VNI and ARP-suppression
  mode), ``leave`` removes the network's devices and everything on them, a changed
  ``arp_suppression`` switches the mode in place. Removals are conditional: an FDB entry is
  removed only while it still points at the VTEP named in the delta, a neighbour entry only
  while it still resolves to the MAC named. Adding an entry that exists is not an error.
  Entries not named in a delta are never touched: nothing blinks.
* Reconciling is the agent's job (``diff_state(dump(), desired)`` then ``apply``), so a
  datapath has no notion of desired state.
* Local ports: ``plugged()`` lists the port ids whose device exists on this host (linux:
  ``tap`` + the first 11 characters of the port id); ``wire(port)`` attaches a present device
  to its network's bridge. ``on_ports_changed`` is called (from any thread) when devices
  appear or go, so the agent can report ACTIVE/DOWN without polling.
* Errors: ``apply`` and ``wire`` raise ``DatapathError`` when the datapath refuses part of a
  change, naming the entries (``"fdb MAC"``, ``"neigh IP"``, ``"device vxlan-V"``...) in
  ``failures``; other exceptions (``OSError``) mean the datapath itself is in trouble. The
  agent calls ``apply`` one network at a time, so an error is always one network's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from l2pop.model import NetworkDelta, NetworkTables


class DatapathError(Exception):
    """The datapath refused part of a change; ``failures`` lists (entry, errno, message)."""

    def __init__(self, message: str, failures: Sequence[tuple[str, int, str]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


class Datapath(Protocol):
    name: str

    def dump(self) -> dict[str, NetworkTables]:
        """network id -> the tables actually programmed."""
        ...

    def apply(self, deltas: Sequence[NetworkDelta]) -> None: ...

    def plugged(self, port_ids: Iterable[str]) -> set[str]:
        """The subset of ``port_ids`` whose local device is present."""
        ...

    def wire(self, port_id: str, network_id: str) -> None:
        """Attach the port's device to the network's bridge (idempotent)."""
        ...

    def set_port_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever local port devices appear or go."""
        ...

    def close(self) -> None: ...
