"""The composition root of `polyfabric server`: settings, wiring, and the process itself."""
