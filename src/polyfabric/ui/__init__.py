"""The web UI's static files (static/): plain ES modules served by the coordinator under /ui.

Nothing here runs in Python; the package exists so that the files ship in the wheel (see
pyproject's package-data) and `polyfabric server` can serve them without Node.js.
"""
