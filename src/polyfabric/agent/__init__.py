"""The node agent: identity, capacity detection, heartbeats with telemetry and health, and (later)
task execution. It dials out to the coordinator; nothing dials in. Never imports server code."""
