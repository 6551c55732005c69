"""One module per aggregate; each repository works on the connection of one unit of work."""
