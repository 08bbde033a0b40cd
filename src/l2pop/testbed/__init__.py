"""Hosts and VMs as network namespaces with real l2pop processes, for tests, demos, benchmarks.

One job per module:

* ``bed.Testbed``: the entry point, put together from the three parts below;
* ``underlay``: the run's namespaces, the underlay bridge, the hosts' veths, the relay;
* ``controlplane`` / ``floodlearn``: l2pop (server and agents) or the flood-and-learn
  baseline;
* ``hosts``: host kinds (Linux hosts with the linux datapath agent, memory agents in a swarm);
  ``ovshost``: Open vSwitch hosts with the ovs datapath agent; ``kinds``: kinds by name and
  testbeds mixing them;
* ``topology``: a topology described once, built on any testbed;
* ``nodes``: the data (hosts, networks, VMs, what a run shares);
* ``teardown``, ``netns``, ``leftovers``: undoing a run, the safety rules, ``testbed clean``;
* ``iproute``, ``relay``, ``capture``, ``tables``: iproute2 commands, the TCP relay,
  counting underlay packets, reading kernel tables back;
* ``process``, ``agents``, ``faults``, ``postgres``: a server process, agent-swarm
  processes and their fault hooks, a throwaway PostgreSQL;
* ``ovs``: a private Open vSwitch (ovsdb-server + ovs-vswitchd) inside a host namespace,
  and a host's underlay on an OVS bridge; ``ovstables``: an OVS host's flows and groups read
  back, watched (``ovs-ofctl monitor``) and hand-made objects beside them.
"""
