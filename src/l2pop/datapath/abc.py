"""The Datapath interface: what an agent needs from the thing that forwards packets.

Everything that differs between implementations is stated here, as attributes and optional
protocols, so the agent never asks which datapath it has (docs/design.md, "Parts and
layering"); ``tests/e2e/test_datapath_contract.py`` runs every implementation through the
same suite. The memory fake is the reference.

Tables:

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
* Encapsulations: ``encaps`` is what the datapath can carry (linux: VXLAN only; ovs and
  memory: VXLAN and GRE, memory unless made with fewer). The agent announces it in its hello
  and never hands the datapath a network whose ``encap`` is not in it (it reports such a
  network as failing instead); ``apply`` refuses one with ``DatapathError`` naming
  ``"encap E"`` all the same. ``dump`` reports each network's encap as programmed.
* Reconciling is the agent's job (``diff_state(dump(), desired)`` then ``apply``), so a
  datapath has no notion of desired state.

Local ports (a VM's device on this host; linux: ``tap`` + the first 11 characters of the
port id):

* ``plugged(port_ids)`` is the subset whose device is present now.
* ``wire(port_id, network_id, mac)`` attaches a present device to the network's bridge and
  sets it up. ``mac`` is the VM's MAC: a datapath that learns nothing (ovs) delivers frames
  for it to this port by it (None: broadcasts only). Idempotent; wiring a port already on
  another network's bridge moves it. A port whose device is absent is left alone, without
  error and whatever the network (the listener reports the device when it comes). Otherwise
  a network that is not programmed here (absent or damaged in ``dump``) raises
  ``DatapathError`` naming ``"port ID"``.
* ``unwire(port_id)`` detaches the port's device from its network (the port was unbound
  from this host, or its device went): no traffic of the network reaches it or comes from
  it any more. Idempotent; a device that is absent or was never wired: nothing.
* A wired port stays wired through every ``apply`` on its network (entries, mode switch,
  rebuild of damaged devices) except ``leave``, which unwires it; its device stays plugged.
* Plugging, wiring and unplugging never change what ``dump`` shows: ports are not entries.
* ``set_port_listener(listener)``: ``listener`` is called, from any thread, after a local
  port's device appears, changes or goes, so the agent reports ACTIVE/DOWN without polling.
  It may be called when nothing the agent cares about changed; it says nothing about what
  changed (the agent asks ``plugged``).
* ``sweep_ports(keep)`` unwires every port wired now whose id is not in ``keep`` (read back
  from the datapath, not remembered: after an agent restart it finds ports unbound while the
  agent was away). The agent calls it on every FULL sync with the ports bound to its host.
* ``state_lost()`` says (once) that programmed state may have been lost behind the agent's
  back since the last call (ovs: ovs-vswitchd restarted, and its flows live in its memory
  only); the agent's next sync is then FULL. The datapath also calls the port listener then.
* ``PortPlugging`` (optional, found with ``port_plugging``): a datapath that can make a port's
  device itself (a simulation) exposes ``plug``/``unplug``; the agent's control endpoint
  offers them only then. A real host's devices belong to its hypervisor, so linux has none.

Errors: ``apply`` and ``wire`` raise ``DatapathError`` when the datapath refuses part of a
change, naming the entries (``"fdb MAC"``, ``"neigh IP"``, ``"device vxlan-V"``, ``"port
ID"``) in ``failures``; other exceptions (``OSError``) mean the datapath itself is in trouble.
The agent calls ``apply`` one network at a time, so an error is always one network's.

Threads: every method may be called from any thread (the agent's worker runs a blocking
datapath's calls in a thread, its control endpoint reads ``dump`` in another).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from l2pop.model import Encap, NetworkDelta, NetworkTables


class DatapathError(Exception):
    """The datapath refused part of a change; ``failures`` lists (entry, errno, message)."""

    def __init__(self, message: str, failures: Sequence[tuple[str, int, str]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


@runtime_checkable
class Datapath(Protocol):
    """What the agent programs (semantics: the module notes)."""

    #: the implementation's name, as ``l2pop agent --datapath`` spells it; for messages only
    name: str
    #: whether calls wait on I/O (a kernel, a switch daemon). The agent then runs its sync in
    #: a worker thread so the event loop (channel, heartbeats) never stalls; a datapath that
    #: only touches memory says False, since a thread per sync would only cost when a swarm
    #: runs hundreds of agents in one process.
    blocking: bool
    #: the encapsulations this datapath can carry (announced in the agent's hello; the agent
    #: reads it instead of asking which datapath it has). Fixed for the datapath's life.
    encaps: frozenset[Encap]

    def dump(self) -> dict[str, NetworkTables]:
        """network id -> the tables actually programmed (damaged: VNI 0, no entries)."""
        ...

    def apply(self, deltas: Sequence[NetworkDelta]) -> None:
        """Program ``deltas`` in order; raises ``DatapathError`` after programming what it
        could."""
        ...

    def plugged(self, port_ids: Iterable[str]) -> set[str]:
        """The subset of ``port_ids`` whose local device is present."""
        ...

    def wire(self, port_id: str, network_id: str, mac: str | None = None) -> None:
        """Attach the port's device, when present, to the network's bridge and set it up
        (idempotent); ``DatapathError`` when the network is not programmed here."""
        ...

    def unwire(self, port_id: str) -> None:
        """Detach the port's device from its network (idempotent)."""
        ...

    def sweep_ports(self, keep: Iterable[str]) -> None:
        """Unwire every wired port whose id is not in ``keep``."""
        ...

    def state_lost(self) -> bool:
        """Whether programmed state may have been lost since the last call (clears it)."""
        ...

    def set_port_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (any thread) whenever local port devices appear, change or go."""
        ...

    def close(self) -> None:
        """Release sockets and threads (idempotent); what is programmed stays (fail static)."""
        ...


@runtime_checkable
class PortPlugging(Protocol):
    """A datapath that can make and remove a port's device itself: a simulated VM.

    ``plug`` makes the device present (the VM starts): ``plugged`` includes the port from then
    on, unwired until ``wire``. ``unplug`` removes it (the VM stops): ``plugged`` leaves it out
    and its wiring is gone; a later ``plug`` brings it back unwired. Both are idempotent, take
    any port id (no network: a device exists before anyone wires it), call the port listener
    and leave ``dump`` unchanged.
    """

    def plug(self, port_id: str) -> None: ...

    def unplug(self, port_id: str) -> None: ...


#: a VM's device is ``tap`` + the first 11 characters of its port id (Neutron's and Nova's
#: naming: 14 characters, inside the kernel's 15)
TAP_PREFIX = "tap"
TAP_ID_CHARS = 11


def tap_name(port_id: str, prefix: str = TAP_PREFIX) -> str:
    """The name of a port's VM device (``prefix`` + port id[:11])."""
    return prefix + port_id[:TAP_ID_CHARS]


def refuse_encap(datapath: Datapath, delta: NetworkDelta) -> None:
    """Raise ``DatapathError`` naming ``"encap E"`` when ``datapath`` cannot carry ``delta``'s
    network (a ``leave`` is always carried out: there is nothing to carry)."""
    if not delta.leave and delta.encap not in datapath.encaps:
        carried = ", ".join(sorted(e.value for e in datapath.encaps)) or "nothing"
        message = f"the {datapath.name} datapath carries {carried}, not {delta.encap.value}"
        raise DatapathError(
            message, [(f"encap {delta.encap.value}", errno.EPROTONOSUPPORT, message)]
        )


def port_plugging(datapath: Datapath) -> PortPlugging | None:
    """The datapath's port plugging, or None when it has none (the one capability check)."""
    return datapath if isinstance(datapath, PortPlugging) else None
