"""What jobgate's server and workers share: the domain, the ports, their adapters and settings.

Dependencies point inward: `jobs`, `catalog` and `errors` know no transport and no database;
`ports` names what the outside must provide; `adapters` and `providers` implement it.
"""
