"""The worker: dials the control plane, runs the requests routed to it on local backends."""
