"""Kernel programming behind one interface, ``abc.Datapath`` (with the optional
``abc.PortPlugging``); implementations: ``memory`` (the reference fake) and ``linux``."""
