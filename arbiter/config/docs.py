"""Render the settings table as Markdown: `python3 -m arbiter.config.docs > docs/settings.md`.

A test compares the file with this output, so the docs cannot drift from the table.
"""

from __future__ import annotations

from arbiter.config.settings import SETTINGS, Setting


def _default(setting: Setting) -> str:
    if setting.name == "workers":
        return "`$WEB_CONCURRENCY` or 1"
    value = setting.default
    if value is None or value == ():
        return ""
    if isinstance(value, tuple):
        value = ",".join(value)
    if isinstance(value, bool):
        value = str(value).lower()
    if setting.name == "umask":
        value = oct(value)
    return f"`{value}`".replace("|", "\\|")


def render() -> str:
    lines = [
        "# Settings",
        "",
        "Generated from `arbiter/config/settings.py` by `python3 -m arbiter.config.docs`; do not edit by hand.",
        "",
        "Every setting can be given, lowest precedence first, as its default, as a key in a config",
        "file (`arbiter.toml`, or a Gunicorn-style `.py` file), as an `ARBITER_<NAME>` environment",
        "variable, or on the command line.",
        "",
    ]
    sections: dict[str, list[Setting]] = {}
    for setting in SETTINGS:
        sections.setdefault(setting.section, []).append(setting)
    for section, settings in sections.items():
        lines += ["", f"## {section.title()}", "", "| key | flags | default | meaning |", "|---|---|---|---|"]
        for setting in settings:
            lines.append(_row(setting))
    return "\n".join(lines) + "\n"


def _row(setting: Setting) -> str:
    flags = ", ".join(f"`{flag}`" for flag in setting.flags) or "(file only)"
    help_text = setting.help.replace("|", "\\|")
    return f"| `{setting.name}` | {flags} | {_default(setting)} | {help_text} |"


if __name__ == "__main__":
    print(render(), end="")
