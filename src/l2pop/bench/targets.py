"""The benchmark targets, shared by the report and its plots."""

KERNEL_RATIO_TARGET = 0.6
KERNEL_RECONCILE_TARGET_S = 0.100
KERNEL_TARGET_ENTRIES = 20_000  # 10k FDB + 10k neighbour
SCALE_P99_TARGET_MS = 250.0
SCALE_TARGET_RATE = 100.0
SCALE_RESTART_TARGET_S = 30.0
SCALE_TARGET_HOSTS = 1000

TIMES = "\u00d7"  # the multiplication sign
