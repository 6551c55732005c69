"""The application layer: use cases (join, heartbeat, lifecycle, tokens, audit) and their ports.

Imports the pure core (domain, scheduling, workflow, security) and defines, in `ports`, the
protocols that the store and the clock implement. Knows nothing of HTTP or SQL.
"""
