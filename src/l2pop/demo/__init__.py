"""``l2pop demo``: what L2 population promises, shown end to end.

``real.py`` runs it on real kernels in network namespaces (root): l2pop and a
flood-and-learn baseline on the same topology, with the packets crossing the underlay
counted. ``simulate.py`` (``--simulate``) tells the control-plane half without root, on
memory-datapath agents. Both build ``story.demo_topology()`` on a ``l2pop.testbed.bed.Testbed``;
only the control plane and the host kind differ.
"""
