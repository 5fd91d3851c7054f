"""The control plane: the public API, the worker hub, routing, the console and the store."""
