//! Drawing primitives shared by every figure: the embedded font, text, rectangles, ticks, hatching,
//! legends.

use super::*;

pub(super) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

pub(super) fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("drawing the plot failed: {e}"))
}

/// The embedded font, parsed once, with its cap height per pixel of size (for centring).
pub(super) struct Typeface {
    pub(super) font: FontRef<'static>,
    pub(super) cap: f32,
}

pub(super) fn typeface() -> Result<&'static Typeface> {
    static FACE: OnceLock<Option<Typeface>> = OnceLock::new();
    FACE.get_or_init(|| {
        let font = FontRef::try_from_slice(FONT_BYTES).ok()?;
        let h = font.glyph_id('H').with_scale(PxScale::from(100.0));
        let cap = font
            .outline_glyph(h)
            .map_or(0.63, |o| o.px_bounds().height() / 100.0);
        Some(Typeface { font, cap })
    })
    .as_ref()
    .ok_or_else(|| Error::Other("the embedded font could not be read".into()))
}

/// Glyphs of `s` at `size` with their pen positions, and the advance of the whole line.
pub(super) fn layout(face: &Typeface, s: &str, size: f64) -> (Vec<(GlyphId, f32)>, f32) {
    let sf = face.font.as_scaled(PxScale::from(size as f32));
    let (mut caret, mut prev, mut out) = (0f32, None, Vec::new());
    for c in s.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            caret += sf.kern(p, id);
        }
        out.push((id, caret));
        caret += sf.h_advance(id);
        prev = Some(id);
    }
    (out, caret)
}

/// Font sizes, scaled with the figure so that a larger export stays legible.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fonts {
    /// The figure's scale against 1200×800, for line widths and markers.
    pub(super) scale: f64,
    pub(super) title: f64,
    pub(super) label: f64,
    pub(super) tick: f64,
}

impl Fonts {
    pub(super) fn for_size(w: u32, h: u32) -> Fonts {
        let s = (w as f64 / 1200.0).min(h as f64 / 800.0).clamp(0.6, 3.0);
        // Below about 10 px DejaVu stops being legible: small figures get crowded instead.
        Fonts {
            scale: s,
            title: (22.0 * s).max(13.0),
            label: (16.0 * s).max(11.0),
            tick: (14.0 * s).max(10.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Rect {
    pub(super) x: i32,
    pub(super) y: i32,
    pub(super) w: i32,
    pub(super) h: i32,
}

impl Rect {
    /// Splits off `w` pixels at the left.
    pub(super) fn take_left(&mut self, w: i32) -> Rect {
        let w = w.min(self.w).max(0);
        let r = Rect { w, ..*self };
        self.x += w;
        self.w -= w;
        r
    }
}

pub(super) const INK: RGBColor = RGBColor(30, 30, 30);
pub(super) const GREY_TEXT: RGBColor = RGBColor(90, 90, 90);
pub(super) const EMPTY_BG: RGBColor = RGBColor(238, 238, 238);
pub(super) const EMPTY_HATCH: RGBColor = RGBColor(190, 190, 190);
/// Cells of non-finite deltas (NaN/inf): `view::grid::NONFINITE`, as on screen.
pub const NONFINITE: RGBColor =
    RGBColor(grid::NONFINITE[0], grid::NONFINITE[1], grid::NONFINITE[2]);

pub(super) fn text_width(s: &str, size: f64) -> i32 {
    typeface().map_or((s.chars().count() as f64 * size * 0.6) as i32, |f| {
        layout(f, s, size).1.ceil() as i32
    })
}

/// Draws text centred on `(x, y)`, horizontally or reading upwards.
pub(super) fn text(
    area: &Area,
    s: &str,
    (x, y): (i32, i32),
    size: f64,
    color: RGBColor,
    up: bool,
) -> Result<()> {
    text_at(area, s, (x, y), size, color, HPos::Center, up)
}

/// Draws text with its capitals centred on `y`, anchored left, centre or right at `x`, either
/// horizontal or reading upwards.
///
/// Glyphs are rasterised with ab_glyph here rather than through plotters, whose ab_glyph path
/// drops each glyph's side bearing and rounds pen positions, so digits such as "1" wobbled.
pub(super) fn text_at(
    area: &Area,
    s: &str,
    (x, y): (i32, i32),
    size: f64,
    color: RGBColor,
    h: HPos,
    up: bool,
) -> Result<()> {
    let face = typeface()?;
    let (glyphs, width) = layout(face, s, size);
    // Text frame: u along the baseline from the anchor, v downwards; (0, 0) is the anchor.
    let u0 = match h {
        HPos::Left => 0.0,
        HPos::Center => -width / 2.0,
        HPos::Right => -width,
    };
    let base = face.cap * size as f32 / 2.0;
    let scale = PxScale::from(size as f32);
    for (id, caret) in glyphs {
        let g = id.with_scale_and_position(scale, point(u0 + caret, base));
        let Some(o) = face.font.outline_glyph(g) else {
            continue;
        };
        let b = o.px_bounds();
        let mut err = None;
        o.draw(|gx, gy, cov| {
            if cov <= 0.0 || err.is_some() {
                return;
            }
            let (u, v) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
            let p = if up { (x + v, y - u) } else { (x + u, y + v) };
            if let Err(e) = area.draw_pixel(p, &color.mix(cov.min(1.0) as f64)) {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            return Err(draw_err(e));
        }
    }
    Ok(())
}

/// Shortens `s` with "…" until it fits in `max` pixels, after trying a smaller font.
pub(super) fn fit(s: &str, size: f64, max: i32) -> (String, f64) {
    let mut size = size;
    while text_width(s, size) > max && size > 10.0 {
        size *= 0.92;
    }
    if text_width(s, size) <= max {
        return (s.to_string(), size);
    }
    let chars: Vec<char> = s.chars().collect();
    let mut n = chars.len();
    while n > 1 {
        n -= 1;
        let t: String = chars[..n].iter().collect::<String>() + "…";
        if text_width(&t, size) <= max {
            return (t, size);
        }
    }
    ("…".into(), size)
}

/// An empty cell: light grey with diagonal hatching.
pub(super) fn hatch(root: &Area, (x0, y0, x1, y1): (i32, i32, i32, i32)) -> Result<()> {
    let (w, h) = (x1 - x0, y1 - y0);
    if w <= 0 || h <= 0 {
        return Ok(());
    }
    root.draw(&Rectangle::new(
        [(x0, y0), (x1 - 1, y1 - 1)],
        EMPTY_BG.filled(),
    ))
    .map_err(draw_err)?;
    let step = 8;
    let mut s = -(h / step) * step;
    while s < w {
        // The line x − x0 = s + (y − y0), clipped to the cell.
        let u0 = (-s).max(0);
        let u1 = (w - 1 - s).min(h - 1);
        if u1 >= u0 {
            root.draw(&PathElement::new(
                vec![(x0 + s + u0, y0 + u0), (x0 + s + u1, y0 + u1)],
                EMPTY_HATCH,
            ))
            .map_err(draw_err)?;
        }
        s += step;
    }
    Ok(())
}

pub(super) fn luminance(c: RGBColor) -> f64 {
    (0.2126 * c.0 as f64 + 0.7152 * c.1 as f64 + 0.0722 * c.2 as f64) / 255.0
}

/// 1, 2, 5, 10, 20, … at least `n`.
pub(super) fn nice_step(n: usize) -> usize {
    let mut m = 1;
    loop {
        for k in [1, 2, 5] {
            if k * m >= n {
                return k * m;
            }
        }
        m *= 10;
    }
}

/// Three significant digits, switching to exponents for very small or large values.
pub(super) fn sig3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let e = v.abs().log10().floor() as i32;
    if !(-3..5).contains(&e) {
        format!("{v:.2e}")
    } else {
        format!("{v:.*}", (2 - e).max(0) as usize)
    }
}

/// About `n` round tick values between `lo` and `hi`, with their label precision.
pub(super) fn nice_ticks(lo: f64, hi: f64, n: usize) -> (Vec<f64>, usize) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (vec![], 0);
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let ticks = (first..=last).map(|i| i as f64 * step).collect();
    // Digits after the point that the step needs (2.5 × 10^k needs one more).
    let mut dec = (-(step.log10().floor()) as i32).max(0) as usize;
    if ((step / mag) - 2.5).abs() < 1e-9 {
        dec += 1;
    }
    (ticks, dec)
}

pub(super) fn tick_label(v: f64, dec: usize) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        format!("{v:.dec$}")
    }
}

/// A cell's health mark, as a shape (fonts need not hold the screen's glyphs): a ring for a
/// dead delta, a triangle for an outlier, a cross for a non-finite one.
pub(super) fn mark_shape(
    root: &Area,
    m: grid::Mark,
    at: (i32, i32),
    size: i32,
    ink: RGBColor,
) -> Result<()> {
    let style = ink.stroke_width(2);
    match m {
        grid::Mark::Dead => root.draw(&Circle::new(at, size, style)),
        grid::Mark::Outlier => root.draw(&TriangleMarker::new(at, size, ink.filled())),
        grid::Mark::NonFinite => root.draw(&Cross::new(at, size, style)),
    }
    .map_err(draw_err)
}

pub(super) fn legend_width(entries: &[(String, RGBColor)], f: Fonts) -> i32 {
    let w = entries
        .iter()
        .map(|(l, _)| text_width(l, f.tick))
        .max()
        .unwrap_or(0);
    w + (f.tick * 4.0) as i32
}

pub(super) fn draw_legend(
    root: &Area,
    r: Rect,
    top: i32,
    entries: &[(String, RGBColor)],
    f: Fonts,
) -> Result<()> {
    let x = r.x + (f.tick * 0.8) as i32;
    let dy = (f.tick * 1.6) as i32;
    for (i, (l, c)) in entries.iter().enumerate() {
        let y = top + dy / 2 + i as i32 * dy;
        let seg = (f.tick * 1.8) as i32;
        root.draw(&PathElement::new(
            vec![(x, y), (x + seg, y)],
            c.stroke_width((3.0 * f.scale).round().max(2.0) as u32),
        ))
        .map_err(draw_err)?;
        text_at(root, l, (x + seg + 6, y), f.tick, INK, HPos::Left, false)?;
    }
    Ok(())
}
