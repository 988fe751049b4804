"""The shape of every request and answer of the HTTP API, written once.

Requests are msgspec Structs the handlers decode bodies and query strings into (their
constraints are the API's rules); answers are TypedDicts the handlers' answer builders are
checked against. The OpenAPI document (``openapi.py``) is generated from both, and the library
client (``client.py``) is typed with the answers. ``shapes.py`` holds what every API shares:
app id, device UUID, semver, platform, day, ISO times.
"""
