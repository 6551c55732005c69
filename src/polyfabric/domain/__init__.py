"""The domain model: entities, value objects and state machines.

PURE: imports nothing with I/O, never reads the clock, the environment or a random source.
Time (`now`) and identifiers come in as arguments. Everything else in polyfabric may import it.
"""
