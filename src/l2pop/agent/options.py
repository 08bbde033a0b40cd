"""What ``l2pop agent`` hands its datapath factory: ``DatapathOptions``.

Kept apart from ``agent.main`` (and importing nothing) so the CLI can take its defaults and
choices from here without importing the agent to build its parser.
"""

from __future__ import annotations

from dataclasses import dataclass

#: where a packaged Open vSwitch (Debian's openvswitch-switch) puts its sockets
DEFAULT_OVS_RUNDIR = "/var/run/openvswitch"
DEFAULT_OVS_DB = f"unix:{DEFAULT_OVS_RUNDIR}/db.sock"
DEFAULT_BRIDGE = "br-l2pop"
#: ``system``: the kernel's openvswitch module forwards; ``netdev``: ovs-vswitchd itself does
#: (userspace datapath, what the testbed uses: it needs nothing from the kernel)
OVS_DATAPATH_TYPES = ("system", "netdev")
#: the OVSDB connection methods ``ovs-vsctl --db`` accepts (active ones: the agent connects)
OVS_DB_METHODS = ("unix:", "tcp:", "ssl:")


@dataclass(frozen=True)
class DatapathOptions:
    """The datapath's settings, one field per ``l2pop agent`` option.

    ``vtep_ip`` (``--local-ip``) is used by every datapath; the ``ovs_*`` fields and
    ``bridge`` only by ``--datapath ovs`` (the others ignore them). Raises ``ValueError``
    for a datapath type or an OVSDB address Open vSwitch would not take, so a typo fails at
    start with a usage error rather than at the first connection attempt.
    """

    vtep_ip: str
    ovs_db: str = DEFAULT_OVS_DB
    ovs_rundir: str = DEFAULT_OVS_RUNDIR
    bridge: str = DEFAULT_BRIDGE
    ovs_datapath_type: str = "system"

    def __post_init__(self) -> None:
        if self.ovs_datapath_type not in OVS_DATAPATH_TYPES:
            raise ValueError(
                f"OVS datapath type {self.ovs_datapath_type!r}: choose one of "
                f"{', '.join(OVS_DATAPATH_TYPES)}"
            )
        if not self.ovs_db.startswith(OVS_DB_METHODS) or self.ovs_db in OVS_DB_METHODS:
            raise ValueError(
                f"OVSDB address {self.ovs_db!r}: expected unix:PATH, tcp:IP:PORT or ssl:IP:PORT"
            )
        if not self.bridge or len(self.bridge) > 15 or "/" in self.bridge:
            # a bridge is also a network device (its internal port): IFNAMSIZ applies
            raise ValueError(f"bridge name {self.bridge!r}: 1 to 15 characters, no '/'")

    @property
    def ovs_db_path(self) -> str | None:
        """The socket path of a ``unix:`` OVSDB address (None for tcp/ssl)."""
        return self.ovs_db.removeprefix("unix:") if self.ovs_db.startswith("unix:") else None
