"""`python -m polyfabric` is the `polyfabric` command."""

from polyfabric.cli.main import main

main()
