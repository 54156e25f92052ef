"""The terminal: console, views, the shared options. The commands themselves are in memoria_cli/commands."""
