"""``--set ATTACK.SETTING=VALUE`` overrides, parsed once for the CLI and study files."""

from __future__ import annotations

from edgerobust.errors import ConfigError


def parse_overrides(
    values: list[str] | None,
) -> dict[str, dict[str, float | int | bool | str | None]]:
    """``["cw.steps=10", "pgd.random_start=false"]`` -> ``{"cw": {"steps": 10}, ...}``.

    Values are ints, floats, true/false, none, or else kept as text (``ead.decision_rule=L1``).
    """
    out: dict[str, dict[str, float | int | bool | str | None]] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        attack, dot, name = key.strip().partition(".")
        if not (sep and dot and attack and name and raw.strip()):
            raise ConfigError(
                f"--set: expected ATTACK.SETTING=VALUE (e.g. cw.steps=10), got {item!r}"
            )
        text = raw.strip()
        value: float | int | bool | str | None
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        elif text.lower() == "none":
            value = None
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        out.setdefault(attack.strip(), {})[name.strip()] = value
    return out
