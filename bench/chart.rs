//! The comparison as an SVG chart: one panel per workload, a horizontal bar
//! per implementation for its median time per task on a logarithmic axis,
//! a thin line across each bar from its fastest to its slowest run, and the
//! figure and ratio to the best peer at the end of the bar. This crate's
//! bars are orange, the peers' blue-grey, references (not a task API) light
//! grey.
//!
//! Drawn with `plotters`' SVG backend alone: the file holds `<text>`
//! elements, which the viewer lays out in its own sans-serif font, so the
//! label widths below are estimates (7 px a character at 13 px).

use std::path::Path;

use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// How a bar is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// This crate: highlighted.
    Ours,
    /// A peer: counts for "best peer".
    Peer,
    /// Context only.
    Reference,
}

/// One implementation's figures in one workload, in nanoseconds.
pub struct Bar {
    pub label: String,
    pub kind: BarKind,
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    /// Median over the best peer's median, if there is a peer.
    pub ratio: Option<f64>,
}

/// One workload: a panel of the chart.
pub struct Group {
    pub title: String,
    /// What one task is: "task", "item", "round trip", "pool".
    pub per: &'static str,
    pub bars: Vec<Bar>,
}

const WIDTH: u32 = 1100;
const TOP: u32 = 78;
const BAR_HEIGHT: u32 = 24;
/// A panel's title above it and its axis below it.
const PANEL_EXTRA: u32 = 30 + 42;
const GAP: u32 = 14;
const FONT: &str = "sans-serif";

const OURS: RGBColor = RGBColor(230, 97, 1);
const PEER: RGBColor = RGBColor(96, 125, 139);
const REFERENCE: RGBColor = RGBColor(189, 189, 189);
const INK: RGBColor = RGBColor(33, 33, 33);
const FAINT: RGBColor = RGBColor(117, 117, 117);

fn color(kind: BarKind) -> RGBColor {
    match kind {
        BarKind::Ours => OURS,
        BarKind::Peer => PEER,
        BarKind::Reference => REFERENCE,
    }
}

/// `ns` in the unit that keeps it between 1 and 1000: "571 ns", "1.19 us"
/// (written µs), "9.31 ms".
pub fn human(ns: f64) -> String {
    let (x, unit) = if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    if x >= 100.0 {
        format!("{x:.0} {unit}")
    } else if x >= 10.0 {
        format!("{x:.1} {unit}")
    } else {
        format!("{x:.2} {unit}")
    }
}

/// The figure at the end of a bar: "534 ns · 0.89x".
fn figure_text(bar: &Bar) -> String {
    match bar.ratio {
        // Two significant digits below 0.1x: 0.024x, 0.0015x.
        Some(ratio) => {
            let digits = (1.0 - ratio.max(1e-9).log10().floor()).max(2.0) as usize;
            format!("{} · {ratio:.digits$}x", human(bar.median_ns))
        }
        None => human(bar.median_ns),
    }
}

/// An axis tick: "1 ns", "10 µs", "1 ms", "1 s".
fn tick(ns: f64) -> String {
    let (x, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    format!("{} {unit}", x.round())
}

/// Whole decades around `lo..hi`, with room on the right of the bars for
/// their figures: `room(lo, hi)` says whether the figures fit.
fn decades(lo: f64, hi: f64, room: impl Fn(f64, f64) -> bool) -> (f64, f64) {
    let lo = 10f64.powf(lo.max(1e-3).log10().floor());
    let mut top = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    while !room(lo, top) {
        top *= 10.0;
    }
    (lo, top)
}

/// Writes the chart of `groups` to `path` (an SVG file).
pub fn write_svg(
    path: &Path,
    title: &str,
    subtitle: &[String],
    groups: &[Group],
) -> Result<(), String> {
    let groups: Vec<&Group> = groups.iter().filter(|g| !g.bars.is_empty()).collect();
    if groups.is_empty() {
        return Err("no rows to draw".into());
    }
    let height = TOP
        + 18 * subtitle.len().saturating_sub(1) as u32
        + groups
            .iter()
            .map(|g| g.bars.len() as u32 * BAR_HEIGHT + PANEL_EXTRA + GAP)
            .sum::<u32>();
    let longest = groups
        .iter()
        .flat_map(|g| &g.bars)
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(10);
    let label_width = (longest as u32 * 7 + 16).clamp(120, 480);

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let heading = (FONT, 20).into_font().style(FontStyle::Bold).color(&INK);
    root.draw(&Text::new(title.to_string(), (16, 12), heading))
        .map_err(|e| e.to_string())?;
    let small = (FONT, 13).into_font().color(&FAINT);
    let mut y = 38;
    for line in subtitle {
        root.draw(&Text::new(line.clone(), (16, y), small.clone()))
            .map_err(|e| e.to_string())?;
        y += 18;
    }
    legend(&root, y + 4)?;

    let mut y = TOP + 18 * subtitle.len().saturating_sub(1) as u32;
    for group in groups {
        let panel_height = group.bars.len() as u32 * BAR_HEIGHT + PANEL_EXTRA;
        let area = root.clone().shrink((0, y), (WIDTH, panel_height));
        panel(&area, group, label_width)?;
        y += panel_height + GAP;
    }
    root.present().map_err(|e| e.to_string())
}

/// The key to the colours, in one line at `y`.
fn legend(root: &DrawingArea<SVGBackend, plotters::coord::Shift>, y: i32) -> Result<(), String> {
    let text = (FONT, 13).into_font().color(&INK);
    let entries = [
        (BarKind::Ours, "concurrent-futures"),
        (BarKind::Peer, "peers"),
        (BarKind::Reference, "reference (not a task API)"),
    ];
    let mut x = 16;
    for (kind, name) in entries {
        root.draw(&Rectangle::new(
            [(x, y), (x + 14, y + 12)],
            color(kind).filled(),
        ))
        .map_err(|e| e.to_string())?;
        root.draw(&Text::new(name, (x + 20, y), text.clone()))
            .map_err(|e| e.to_string())?;
        x += 20 + name.len() as i32 * 7 + 24;
    }
    let note = "bar: median of the runs · line: fastest to slowest run · figure: median, and x the best peer's median (lower is better)";
    root.draw(&Text::new(
        note,
        (x, y),
        (FONT, 12).into_font().color(&FAINT),
    ))
    .map_err(|e| e.to_string())
}

/// One workload's panel: its title, its bars, its log axis.
fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    group: &Group,
    label_width: u32,
) -> Result<(), String> {
    let n = group.bars.len() as i32;
    let lo = group
        .bars
        .iter()
        .map(|b| b.min_ns.min(b.median_ns))
        .fold(f64::INFINITY, f64::min);
    let hi = group
        .bars
        .iter()
        .map(|b| b.max_ns.max(b.median_ns))
        .fold(0.0, f64::max);
    // Each bar's figure starts just past its line (or bar) and is about
    // 7 px a character; the plot is what the labels leave of the width.
    let plot_width = (WIDTH - label_width - 32) as f64;
    let room = |lo: f64, top: f64| {
        let per_decade = plot_width / (top / lo).log10();
        group.bars.iter().all(|b| {
            let start = (b.median_ns.max(b.max_ns) * 1.15 / lo).log10() * per_decade;
            start + figure_text(b).chars().count() as f64 * 7.0 <= plot_width
        })
    };
    let (lo, hi) = decades(lo, hi, room);
    let mut ticks = Vec::new();
    let mut t = lo;
    while t <= hi * 1.001 {
        ticks.push(t);
        t *= 10.0;
    }
    let labels: Vec<&str> = group.bars.iter().map(|b| b.label.as_str()).collect();

    let mut chart = ChartBuilder::on(area)
        .caption(
            &group.title,
            (FONT, 15).into_font().style(FontStyle::Bold).color(&INK),
        )
        .margin_left(8)
        .margin_right(24)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(
            (lo..hi).log_scale().with_key_points(ticks),
            (0..n).into_segmented(),
        )
        .map_err(|e| e.to_string())?;
    // Row 0 at the top.
    let row = |i: usize| n - 1 - i as i32;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(224, 224, 224))
        .x_desc(format!("time per {} (log scale)", group.per))
        .x_label_formatter(&|v| tick(*v))
        .y_labels(n as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if (0..n).contains(i) => {
                labels[(n - 1 - i) as usize].to_string()
            }
            _ => String::new(),
        })
        .label_style((FONT, 13).into_font().color(&INK))
        .axis_desc_style((FONT, 13).into_font().color(&FAINT))
        .draw()
        .map_err(|e| e.to_string())?;

    let at_left = Pos::new(HPos::Left, VPos::Center);
    let figure = (FONT, 12).into_font().color(&INK).pos(at_left);
    let our_figure = (FONT, 12)
        .into_font()
        .style(FontStyle::Bold)
        .color(&INK)
        .pos(at_left);
    for (i, bar) in group.bars.iter().enumerate() {
        let r = row(i);
        let mut rect = Rectangle::new(
            [
                (lo, SegmentValue::Exact(r)),
                (bar.median_ns, SegmentValue::Exact(r + 1)),
            ],
            color(bar.kind).filled(),
        );
        rect.set_margin(4, 4, 0, 0);
        chart.draw_series([rect]).map_err(|e| e.to_string())?;
        chart
            .draw_series([PathElement::new(
                vec![
                    (bar.min_ns, SegmentValue::CenterOf(r)),
                    (bar.max_ns, SegmentValue::CenterOf(r)),
                ],
                INK.stroke_width(1),
            )])
            .map_err(|e| e.to_string())?;
        let text = figure_text(bar);
        let at = bar.median_ns.max(bar.max_ns) * 1.15;
        let style = match bar.kind {
            BarKind::Ours => our_figure.clone(),
            _ => figure.clone(),
        };
        chart
            .draw_series([Text::new(text, (at, SegmentValue::CenterOf(r)), style)])
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
