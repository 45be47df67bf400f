"""The fleet server (`arbiter fleet`): one page and one JSON API over many Arbiter masters and
supervisord instances (docs/fleet.md).

It is an ordinary asyncio web service, not a master: it holds only accounts, API tokens,
sessions, the activity log and deploy records (SQLite), asks every node concurrently with a
deadline, and acts only through the nodes' own APIs, so each node keeps working without it.
"""
