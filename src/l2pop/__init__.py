"""l2pop: L2 Population for Linux VXLAN overlays."""

__version__ = "0.1.0"
