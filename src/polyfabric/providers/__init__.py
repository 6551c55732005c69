"""Where the autoscaler gets nodes from: start and stop agent processes (I/O edge).

Each provider implements `services.pools.PoolProvider`: `start` launches one agent that joins with
a single-use join token and the pool's labels (among them `pool-member=<id>`, by which the
coordinator links the node to its member), and returns a handle; `stop` ends it from that handle.
"""
