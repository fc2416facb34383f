"""jobgate's gRPC server: the JobService over the ports in core, with health and reflection.

`JobgateServer` (server.app) is the entry point; `python -m server` runs it alone.
"""
