"""The l2pop agent: channel client, reconciler, port wiring, status reports, control endpoint.

Never imports ``l2pop.store`` or ``l2pop.server``: it knows the server only through the wire
protocol (``l2pop.wire``) and the REST status call.
"""
