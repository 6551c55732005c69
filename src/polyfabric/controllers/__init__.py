"""Reconcile loops of the coordinator: each re-reads current state, converges, and can be driven
one pass at a time through `run_once()` (tests do that with a FakeClock)."""
