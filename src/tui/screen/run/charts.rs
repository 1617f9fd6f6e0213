//! The Run screen's curves over the steps: sparklines of the selected row (its ‖ΔW‖_F and
//! effective rank per checkpoint) and the trainer's loss curve.

use crate::tui::ui::{centered_message, fit, put, Theme};
use crate::view::text::num;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Sparkline, SparklineBar, Widget};

/// Bars are scaled to this many steps of height.
const FULL: u64 = 1000;

/// How a sparkline's bars are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bars {
    /// From 0 to the largest value (a norm: its growth reads as it is).
    FromZero,
    /// From the smallest to the largest value, the smallest still a sliver (a rank that moves
    /// a little; the label gives the range).
    Range,
}

/// A labelled sparkline: `label  value at the cursor` on the first line, one bar per step under
/// it (the step under the cursor highlighted; steps without a value left blank).
pub fn sparkline(
    buf: &mut Buffer,
    area: Rect,
    label: &str,
    values: &[Option<f64>],
    cursor: usize,
    bars_of: Bars,
    theme: Theme,
) {
    if area.height == 0 || area.width < 4 {
        return;
    }
    let at = values.get(cursor).copied().flatten();
    let x = put(buf, area, area.x, area.y, label, theme.header());
    let now = at.map_or_else(|| "-".to_string(), num);
    let x = put(buf, area, x + 2, area.y, &now, Style::new());
    let finite = || values.iter().flatten().copied().filter(|v| v.is_finite());
    let max = finite().fold(f64::NEG_INFINITY, f64::max);
    let min = match bars_of {
        Bars::FromZero => 0.0,
        // Values equal but for rounding are one value (full bars, no range).
        Bars::Range => Some(finite().fold(f64::INFINITY, f64::min))
            .filter(|&m| max - m > 1e-6 * max.abs())
            .unwrap_or(max),
    };
    if bars_of == Bars::Range && min < max {
        let range = format!("  ({}–{})", num(min), num(max));
        put(buf, area, x, area.y, &range, theme.dim());
    }
    let bars = Rect::new(area.x, area.y + 1, area.width, area.height - 1);
    let n = values.len();
    if bars.height == 0 || n == 0 {
        return;
    }
    // The smallest of a range keeps an eighth of the height, so that it is not taken for none.
    let floor = match bars_of {
        Bars::FromZero => 0.0,
        Bars::Range => 0.125,
    };
    // Each step gets an equal share of the width, with a gap when there is room.
    let w = (bars.width as usize / n).max(1);
    let gap = usize::from(w >= 3);
    let mut data: Vec<SparklineBar> = Vec::with_capacity(w * n);
    for (i, v) in values.iter().enumerate() {
        let h = v.map(|v| {
            let t = if max > min && v.is_finite() {
                floor + (1.0 - floor) * ((v - min) / (max - min)).clamp(0.0, 1.0)
            } else if v.is_finite() && v > 0.0 {
                // One value (or all equal): a full bar, not none.
                1.0
            } else {
                0.0
            };
            (t * FULL as f64).round() as u64
        });
        let style = if i == cursor {
            theme.key()
        } else {
            theme.bar()
        };
        for _ in 0..w - gap {
            data.push(SparklineBar::from(h).style(style));
        }
        for _ in 0..gap {
            data.push(SparklineBar::from(None::<u64>));
        }
    }
    Sparkline::default()
        .data(data)
        .max(FULL)
        .absent_value_symbol(" ")
        .render(bars, buf);
}

/// The loss per logged step as a line, the checkpoints' steps as dots on it; the step under the
/// cursor named in the title. Without a trainer's log, says so.
pub fn loss_chart(
    buf: &mut Buffer,
    area: Rect,
    loss: &[(u64, f64)],
    checkpoints: &[(u64, Option<f64>)],
    cursor: usize,
    theme: Theme,
) {
    if area.height < 3 || area.width < 10 {
        return;
    }
    let mut title = vec![Span::styled("loss", theme.header())];
    if let Some((step, l)) = checkpoints.get(cursor) {
        let at = l.map_or_else(|| "-".to_string(), num);
        title.push(Span::raw(format!("  {at} at step {step}")));
    }
    buf.set_line(area.x, area.y, &Line::from(title), area.width);
    let body = Rect::new(area.x, area.y + 1, area.width, area.height - 1);
    if loss.is_empty() {
        let msg = Line::styled(
            fit("no trainer_state.json", body.width as usize),
            theme.dim(),
        );
        centered_message(buf, body, vec![msg], None, theme);
        return;
    }
    let line: Vec<(f64, f64)> = loss.iter().map(|&(s, l)| (s as f64, l)).collect();
    let dots: Vec<(f64, f64)> = checkpoints
        .iter()
        .filter_map(|&(s, l)| Some((s as f64, l?)))
        .collect();
    let (x0, x1) = line
        .iter()
        .chain(&dots)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (y0, y1) = line
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let pad = |a: f64, b: f64| if a < b { (a, b) } else { (a - 0.5, b + 0.5) };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let sets = vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(theme.bar())
            .data(&line),
        Dataset::default()
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(theme.key().add_modifier(Modifier::BOLD))
            .data(&dots),
    ];
    let label = |v: f64| Span::styled(num(v), theme.dim());
    let step = |v: f64| Span::styled(format!("{v:.0}"), theme.dim());
    Chart::new(sets)
        .x_axis(
            Axis::default()
                .bounds([x0, x1])
                .labels([step(x0), step(x1)]),
        )
        .y_axis(
            Axis::default()
                .bounds([y0, y1])
                .labels([label(y0), label(y1)]),
        )
        .render(body, buf);
}
