"""The HTTP adapter: FastAPI routes over the services, /v1, OpenAPI served at /openapi.json.

`errors.py` is the only place that maps domain errors to HTTP; `auth.py` turns a bearer token
or a node's signature into a Principal. Routes are thin: parse, call one service, shape output.
"""
