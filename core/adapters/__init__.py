"""The embedded adapters behind core's ports: SQLite stores, in-process broker and event bus,
and a local folder for blobs. `core.backends.open_backends` picks them by URL scheme."""
