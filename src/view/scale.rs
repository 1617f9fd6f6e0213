//! Colour scales: the palettes, a value range mapped onto one, and the colours of cells without
//! a value. Shared by the explorer's maps and the PNG heatmaps.

/// The two kinds of colour scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleKind {
    /// Low to high: viridis.
    Sequential,
    /// −1 … 0 … +1: red–yellow–blue, for cosines and growth.
    Diverging,
}

impl ScaleKind {
    pub fn palette(self) -> &'static [[u8; 3]] {
        match self {
            ScaleKind::Sequential => &VIRIDIS,
            ScaleKind::Diverging => &RDYLBU,
        }
    }
}

/// matplotlib's viridis at eight stops (as plotters' `ViridisRGB`).
pub const VIRIDIS: [[u8; 3]; 8] = [
    [68, 1, 84],
    [70, 50, 127],
    [54, 92, 141],
    [39, 127, 143],
    [31, 162, 136],
    [74, 194, 110],
    [160, 219, 57],
    [254, 232, 37],
];

/// ColorBrewer RdYlBu, blue for −1 through pale yellow to red for +1: its centre is not grey,
/// so a cosine near 0 never looks like an empty cell.
pub const RDYLBU: [[u8; 3]; 9] = [
    [69, 117, 180],
    [116, 173, 209],
    [171, 217, 233],
    [224, 243, 248],
    [255, 255, 191],
    [254, 224, 144],
    [253, 174, 97],
    [244, 109, 67],
    [215, 48, 39],
];

/// Cells of non-finite deltas (NaN/inf): magenta, which neither palette ever produces.
pub const NONFINITE: [u8; 3] = [255, 0, 255];

/// Cells with LoRA but no value (statistics not there yet, a full tensor, a pair that cannot
/// be compared): grey, expert targets purple.
pub const PRESENT: [u8; 3] = [70, 70, 70];
pub const PRESENT_EXPERT: [u8; 3] = [95, 55, 120];

/// The colour of a [`CellKind::Present`] cell in column `emphasis`.
pub fn present_color(emphasis: bool) -> [u8; 3] {
    if emphasis {
        PRESENT_EXPERT
    } else {
        PRESENT
    }
}

/// A value range and the palette it maps onto.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub kind: ScaleKind,
    /// Some cell is non-finite: legends explain its mark.
    pub nonfinite: bool,
}

impl Scale {
    pub fn fixed(lo: f64, hi: f64, kind: ScaleKind) -> Scale {
        Scale {
            lo,
            hi,
            kind,
            nonfinite: false,
        }
    }

    /// Smallest to largest finite value; a constant still gets a range, centred on it.
    pub fn sequential(values: impl IntoIterator<Item = f64>) -> Option<Scale> {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            return None;
        }
        if lo == hi {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo, hi) = (lo - pad, hi + pad);
        }
        Some(Scale::fixed(lo, hi, ScaleKind::Sequential))
    }

    /// Symmetric around 0, as far as the largest finite |value| (±1 when all are 0): a change
    /// either way reads by its colour, no change in the palette's pale centre.
    pub fn diverging(values: impl IntoIterator<Item = f64>) -> Option<Scale> {
        let m = values
            .into_iter()
            .filter(|v| v.is_finite())
            .map(f64::abs)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))?;
        let m = if m == 0.0 { 1.0 } else { m };
        Some(Scale::fixed(-m, m, ScaleKind::Diverging))
    }

    /// Position of `v` on the scale, 0…1 (NaN-safe: bad values land at the bottom).
    pub fn t(&self, v: f64) -> f64 {
        let t = (v - self.lo) / (self.hi - self.lo);
        if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    pub fn color(&self, v: f64) -> [u8; 3] {
        ramp(self.kind.palette(), self.t(v))
    }
}

/// Linear interpolation between evenly spaced stops, `t` in 0…1.
pub fn ramp(stops: &[[u8; 3]], t: f64) -> [u8; 3] {
    let n = stops.len() - 1;
    let x = t.clamp(0.0, 1.0) * n as f64;
    let i = (x.floor() as usize).min(n - 1);
    let f = x - i as f64;
    let (a, b) = (stops[i], stops[i + 1]);
    std::array::from_fn(|c| (a[c] as f64 + (b[c] as f64 - a[c] as f64) * f).round() as u8)
}
