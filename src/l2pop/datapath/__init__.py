"""Kernel programming behind one interface: ``abc.Datapath``; ``memory`` (fake), ``linux``."""
