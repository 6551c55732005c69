"""Cryptographic building blocks shared by the coordinator and the agent.

Ed25519 keys and their files (`keys`), raw signatures (`signing`), RFC 9421 HTTP message
signatures with RFC 9530 content digests (`http_signatures`) and bearer tokens (`tokens`).

The package is pure-ish on purpose: it touches the file system only to store private keys and uses
randomness only to make keys and tokens. It opens no sockets and knows no database or web
framework (it imports `cryptography` and `http_message_signatures`, never httpx, starlette,
fastapi or sqlalchemy), so the same code signs requests in the agent and checks them in the
coordinator, and the tests need neither a server nor a network.
"""

__all__: list[str] = []
