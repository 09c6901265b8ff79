//! The report's PNG plots (plotters, bitmap backend). Text needs a TrueType font; DejaVu
//! Sans from Debian's fonts-dejavu-core is used when installed, else the plots have no
//! captions.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub(super) fn font_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| match std::fs::read(FONT) {
        Ok(bytes) => plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .is_ok(),
        Err(_) => false,
    })
}

const COLORS: [RGBColor; 4] = [
    RGBColor(200, 40, 40),
    RGBColor(40, 90, 200),
    RGBColor(30, 150, 60),
    RGBColor(150, 90, 20),
];

pub(super) type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Each series as a line with dots of `dot` pixels, and (with a font) a legend.
pub(super) fn draw_lines<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    series: &[Series],
    dot: i32,
    text: bool,
) -> Result<()> {
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line = chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?;
        if text {
            line.label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, dot, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

fn scatter(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    log_x: bool,
) -> Result<()> {
    let pts: Vec<&(f64, f64)> = series.iter().flat_map(|s| &s.points).collect();
    if pts.is_empty() {
        return Ok(());
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &&(x, y) in &pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let (dx, dy) = ((x1 - x0).max(1e-9) * 0.08, (y1 - y0).max(1e-9) * 0.1);
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let text = font_ready();
        let mut b = ChartBuilder::on(&root);
        b.margin(20)
            .x_label_area_size(if text { 45 } else { 10 })
            .y_label_area_size(if text { 60 } else { 10 });
        if text {
            b.caption(title, ("sans-serif", 24));
        }
        let xr = if log_x {
            (x0 * 0.8).max(1e-3)..x1 * 1.25
        } else {
            (x0 - dx)..(x1 + dx)
        };
        let mut chart = b
            .build_cartesian_2d(xr, (y0 - dy)..(y1 + dy))
            .map_err(|e| anyhow!("{e}"))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(xlabel).y_desc(ylabel);
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(|e| anyhow!("{e}"))?;
        draw_lines(&mut chart, series, 5, text)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn plot_latency_accuracy(path: &Path, series: &[Series]) -> Result<()> {
    scatter(
        path,
        "ImageNet top-1 vs latency (batch 1, this CPU)",
        "latency (ms)",
        "top-1 (%)",
        series,
        false,
    )
}

pub fn plot_concat_add(path: &Path, series: &[Series]) -> Result<()> {
    scatter(
        path,
        "Concatenation / addition time vs batch",
        "batch",
        "concat time / add time",
        series,
        false,
    )
}
