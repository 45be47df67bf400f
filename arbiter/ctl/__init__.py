"""`arbiter ctl`: the command-line client of a master's control API (its HTTP client, its
commands and tables, and the interactive shell). It talks to a master only over the API."""
