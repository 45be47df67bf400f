"""Render the settings table as Markdown: `python3 -m arbiter.config.docs > docs/settings.md`.

A test compares the file with this output, so the docs cannot drift from the table.
"""

from __future__ import annotations

from arbiter.config.setting import SECTIONS
from arbiter.config.settings import SETTINGS, Setting


def _default(setting: Setting) -> str:
    if setting.name == "workers":
        return "`$WEB_CONCURRENCY` or 1"
    shown = setting.shown_default()
    return f"`{shown}`".replace("|", "\\|") if shown else ""


def render() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `arbiter/config/settings.py` by `python3 -m arbiter.config.docs`; do not edit by hand.",
        "",
        "Every setting can be given, lowest precedence first, as its default, as a key in a config",
        "file, in `$GUNICORN_CMD_ARGS` (as Gunicorn reads it), as an `ARBITER_<NAME>` environment",
        "variable, or on the command line. `-c FILE` names the file: a `.toml` file, a supervisord.conf",
        "(a file with `[section]` headers), or a Gunicorn Python config (a `.py` file, any other file,",
        "or `python:MODULE`). With no `-c`, `./arbiter.toml` is read if it exists, else",
        "`./gunicorn.conf.py` (as Gunicorn does); when both exist, `./arbiter.toml` wins, the other is",
        "not read, and the start log says so. An `ARBITER_*` variable that names no setting is logged",
        "as a warning and ignored. Gunicorn's flags and what Arbiter does with each: docs/gunicorn.md.",
        "",
    ]
    rank = {name: index for index, name in enumerate(SECTIONS)}
    sections: dict[str, list[Setting]] = {}
    for setting in sorted(SETTINGS, key=lambda item: rank.get(item.section, len(rank))):
        sections.setdefault(setting.section, []).append(setting)
    for section, settings in sections.items():
        title = SECTIONS.get(section, section.title())
        lines += ["", f"## {title}", "", "| key | flags | default | meaning |", "|---|---|---|---|"]
        for setting in settings:
            lines.append(_row(setting))
    return "\n".join(lines) + "\n"


def _row(setting: Setting) -> str:
    flags = ", ".join(f"`{flag}`" for flag in setting.flags) or "(file only)"
    help_text = setting.help.replace("|", "\\|")
    return f"| `{setting.name}` | {flags} | {_default(setting)} | {help_text} |"


if __name__ == "__main__":
    print(render(), end="")
