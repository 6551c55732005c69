"""Wire models of the /v1 API (pydantic), separate from the domain types they carry.

Request models forbid unknown fields, so a typo is a 422 naming the field, never a silent drop.
The client, the CLI and the agent use the same models as the server.
"""
