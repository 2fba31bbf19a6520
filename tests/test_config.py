"""Stage parameters: settings from the command line (``pipeline.train --param``)."""

from __future__ import annotations

import pytest

from pipeline.config import GlyphParams, StageParams


def test_overrides_parse_each_field_as_its_type():
    params = StageParams().with_overrides(
        ["clean.thin_ratio=0.39", "segment.complete_paths_only=off", "glyph.size=16", "binarize.method = sauvola"])
    assert params.clean.thin_ratio == 0.39 and params.segment.complete_paths_only is False
    assert params.glyph.size == 16 and isinstance(params.glyph.size, int) and params.binarize.method == "sauvola"
    # Everything else keeps its value, and the original is untouched (frozen dataclasses).
    assert params.clean.speck_ratio == StageParams().clean.speck_ratio and StageParams().clean.thin_ratio == 0.5
    assert StageParams().with_overrides([]) == StageParams()
    # A manifest's ints where the field is a float still come out as floats.
    assert isinstance(StageParams().with_overrides(["segment.cut_ink=1"]).segment.cut_ink, float)


@pytest.mark.parametrize(("setting", "message"), [
    ("clean", "expected SECTION.NAME=VALUE"),
    ("thin_ratio=0.4", "expected SECTION.NAME=VALUE"),
    ("colour.thin_ratio=0.4", "unknown section 'colour' (known: binarize, clean, segment, glyph)"),
    ("clean.thin=0.4", "clean has no 'thin' (known: thin_ratio, min_stroke_for_opening, speck_ratio, upright_ratio, "
     "border_cover, border_band)"),
    ("glyph.size=1.5", "'1.5' is not a int"),
    ("clean.thin_ratio=", "'' is not a float"),
    ("glyph.shade=maybe", "expected true or false"),
    ("segment.cuts_per_glyph=-1", "must not be negative"),
    ("clean.thin_ratio=nan", "must not be negative"),
])
def test_overrides_refuse_bad_settings_with_a_clear_message(setting: str, message: str):
    with pytest.raises(ValueError, match="stage parameter") as info:
        StageParams().with_overrides([setting])
    assert message in str(info.value)


@pytest.mark.parametrize(("shade", "first_mark", "channels", "grey", "mark"), [
    (False, False, 1, None, None),
    (True, False, 2, 1, None),
    (False, True, 2, None, 1),
    (True, True, 3, 1, 2),
])
def test_crop_channels_in_their_order(shade: bool, first_mark: bool, channels: int, grey: int | None,
                                      mark: int | None):
    """The mask first, then the grey levels, then the first-glyph mark (what lattice_crops makes
    and what the trainer's jitter and strike line must find)."""
    params = GlyphParams(shade=shade, first_mark=first_mark)
    assert (params.channels, params.grey_channel, params.mark_channel) == (channels, grey, mark)
