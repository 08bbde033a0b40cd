"""The ``l2pop`` command line: argparse commands over the REST API (see ``main``)."""
