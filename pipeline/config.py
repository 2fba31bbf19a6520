"""Every tuning parameter of the stages, in one place (frozen dataclasses).

A trained bundle records the :class:`StageParams` it was trained with in its manifest, and the
run uses those, so a model is always read with the preprocessing it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class BinarizeParams:
    method: str = "otsu"  # "otsu" (global) or "sauvola" (local, for uneven backgrounds)
    window: int = 25  # sauvola window, pixels (odd)
    k: float = 0.2  # sauvola sensitivity
    smooth: int = 3  # median filter before thresholding (odd; 1 = off) ...
    smooth_min_stroke: float = 3.5  # ... for schemes whose strokes are at least this wide (pixels)


@dataclass(frozen=True)
class CleanParams:
    #: Structures thinner than this fraction of the typical stroke width are erased (strike lines).
    thin_ratio: float = 0.5
    #: Below this stroke width (pixels) no opening is done: thin fonts have nothing thinner to remove.
    min_stroke_for_opening: float = 3.5
    #: Components smaller than this fraction of the text height squared are specks.
    speck_ratio: float = 0.03
    #: Where the opening runs, also keep what an upright bar this many stroke widths tall fits in
    #: (thin upright glyph strokes; strike lines run across). 0: off, as in bundles before it.
    upright_ratio: float = 0.0
    #: A frame: rows (columns) within ``border_band`` of the image's height (width) from an edge
    #: that are inked along at least ``border_cover`` of their length are erased. 0: off.
    border_cover: float = 0.8
    border_band: float = 0.15


@dataclass(frozen=True)
class SegmentParams:
    #: Narrowest / widest glyph, as fractions of the mean glyph width over the text span.
    min_width: float = 0.35
    max_width: float = 2.0
    #: Columns whose ink is at most this fraction of the text height are candidate cuts.
    cut_ink: float = 1.0
    #: Keep at most this many candidate cut positions per expected glyph (lowest ink first).
    cuts_per_glyph: float = 6.0
    #: Weight of the equal-width prior against the classifier's log-probabilities.
    width_weight: float = 1.0
    #: Columns of ink shorter than this fraction of the text height at the span's ends are trimmed
    #: (leftover strike-line tails) ...
    tail_ink: float = 0.2
    #: ... but only runs of at least this many text heights of such columns (shorter: glyph arms).
    tail_run: float = 0.4
    #: Spacing of extra candidate cuts inside fused stretches, in mean glyph widths.
    grid_step: float = 0.25
    #: Where above 0, one more candidate cut beside each low-ink valley, at the left stroke's edge:
    #: where the ink, climbing from the valley's floor to the left, first reaches this fraction of
    #: the way to its peak (a neighbour's arm often reaches back over the column of least ink, and
    #: a cut there leaves it in the crop before). 0: off.
    edge_cuts: float = 0.0
    #: Offer only segments on some complete path (off while training: see pipeline.train).
    complete_paths_only: bool = True


@dataclass(frozen=True)
class GlyphParams:
    size: int = 20  # glyph crops are size x size
    margin: int = 2  # empty pixels kept around the glyph inside the crop
    #: A second crop channel with the image's grey levels in the same box (``glyphs.shade``): the
    #: CNN sees what cleaning removed or joined. Off in bundles written before it existed.
    shade: bool = False
    #: One more crop channel, all 255 for a segment that starts the text and 0 elsewhere
    #: (``glyphs.lattice_crops``): a strike line's curled end lies over the first glyph, so an "n"
    #: plus that curl looks like an "m" unless the CNN knows where the crop stands. Off in
    #: bundles written before it existed.
    first_mark: bool = False

    @property
    def channels(self) -> int:
        """Channels of a crop, in this order: the mask, the grey levels, the first-glyph mark."""
        return 1 + self.shade + self.first_mark

    @property
    def grey_channel(self) -> int | None:
        """Index of the grey-level channel, or None without it."""
        return 1 if self.shade else None

    @property
    def mark_channel(self) -> int | None:
        """Index of the first-glyph mark channel (the last), or None without it."""
        return self.channels - 1 if self.first_mark else None


@dataclass(frozen=True)
class StageParams:
    binarize: BinarizeParams = field(default_factory=BinarizeParams)
    clean: CleanParams = field(default_factory=CleanParams)
    segment: SegmentParams = field(default_factory=SegmentParams)
    glyph: GlyphParams = field(default_factory=GlyphParams)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StageParams:
        """Rebuild from a manifest's dict; unknown keys are ignored, missing ones take defaults."""
        data = data or {}
        parts: dict[str, Any] = {}
        for f in fields(cls):
            sub_cls = type(getattr(cls(), f.name))
            given = data.get(f.name, {}) or {}
            known = {sf.name for sf in fields(sub_cls)}
            parts[f.name] = sub_cls(**{k: v for k, v in given.items() if k in known})
        return cls(**parts)

    def with_overrides(self, settings: Sequence[str]) -> StageParams:
        """These parameters with ``SECTION.NAME=VALUE`` settings applied (e.g. ``clean.thin_ratio=0.4``;
        ``pipeline.train --param``), each value parsed as its field's type.

        Raises:
            ValueError: a setting not of that form, an unknown section or name, or a value that
                does not parse as the field's type, with the known names in the message.
        """
        params = self
        for setting in settings:
            key, sep, text = setting.partition("=")
            section, dot, name = key.strip().partition(".")
            if not sep or not dot:
                raise ValueError(f"stage parameter {setting!r}: expected SECTION.NAME=VALUE, e.g. clean.thin_ratio=0.4")
            sections = {f.name: getattr(params, f.name) for f in fields(params)}
            if section not in sections:
                raise ValueError(f"stage parameter {setting!r}: unknown section {section!r} "
                                 f"(known: {', '.join(sections)})")
            part = sections[section]
            kinds = {f.name: _KINDS[str(f.type)] for f in fields(part)}
            if name not in kinds:
                raise ValueError(f"stage parameter {setting!r}: {section} has no {name!r} "
                                 f"(known: {', '.join(kinds)})")
            value = _parse(text.strip(), kinds[name], setting)
            params = replace(params, **{section: replace(part, **{name: value})})
        return params


_KINDS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def _parse(text: str, kind: type, setting: str) -> Any:
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"stage parameter {setting!r}: expected true or false")
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"stage parameter {setting!r}: {text!r} is not a {kind.__name__}") from None
    if kind in (int, float) and not value >= 0:  # every size, ratio and weight here (NaN too)
        raise ValueError(f"stage parameter {setting!r}: must not be negative")
    return value
