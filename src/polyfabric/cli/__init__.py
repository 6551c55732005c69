"""The `polyfabric` command line: one module per noun, `--json` on every listing."""
