"""Versioned SQL migrations for the PostgreSQL stores, one folder per stream (jobs, accounts).

Files are named `NNNN_what.sql` and never edited once released: a change is a new file.
"""
