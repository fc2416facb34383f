"""Model providers: each module serves some models of the catalog. See `base` for the interface."""
