"""The composition root: wires core, server and workers into runnable processes.

The only package allowed to import both `server` and `workers`.
"""
