"""The console's stylesheet: text colours meet WCAG AA contrast (4.5:1) where they are used."""

from __future__ import annotations

import re
from importlib import resources

import pytest

CSS = (resources.files("console") / "static" / "console.css").read_text(encoding="utf-8")
WHITE = "#ffffff"


def colour(name: str) -> str:
    found = re.search(rf"--{name}:\s*(#[0-9a-fA-F]{{6}})", CSS)
    assert found is not None, f"--{name} is not defined as #rrggbb"
    return found.group(1)


def luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


class TestContrast:
    @pytest.mark.parametrize("name", ["text", "link", "muted", "ok", "err", "focus"])
    @pytest.mark.parametrize("background", ["white", "band"])
    def test_text_colours_on_backgrounds(self, name: str, background: str) -> None:
        """Every text colour reaches 4.5:1 on white and on the header band."""
        ground = WHITE if background == "white" else colour("band")
        assert contrast(colour(name), ground) >= 4.5

    def test_button_text(self) -> None:
        """White button text on the link colour reaches 4.5:1."""
        assert contrast(WHITE, colour("link")) >= 4.5

    def test_contrast_formula(self) -> None:
        """Black on white is 21:1 (the formula is right)."""
        assert contrast("#000000", WHITE) == pytest.approx(21.0)

    def test_focus_is_visible(self) -> None:
        """Focused controls get an outline (keyboard users see where they are)."""
        assert re.search(r"a:focus[^{]*\{[^}]*outline:\s*3px solid", CSS) is not None
