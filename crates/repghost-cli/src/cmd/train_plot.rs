//! `curves.png` of a training run: training loss (left) and validation top-1 of the model
//! and its EMA (right), per epoch.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use repghost::train::EpochRow;

use super::report_plot::{draw_lines, font_ready, Series};

fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    ylabel: &str,
    lines: &[Series],
) -> Result<()> {
    let pts: Vec<(f64, f64)> = lines.iter().flat_map(|l| l.points.iter().copied()).collect();
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(_, y) in &pts {
        (y0, y1) = (y0.min(y), y1.max(y));
    }
    let x1 = pts.iter().fold(1.0f64, |m, p| m.max(p.0));
    let dy = (y1 - y0).max(1e-6) * 0.1;
    let text = font_ready();
    let mut b = ChartBuilder::on(area);
    b.margin(15)
        .x_label_area_size(if text { 40 } else { 10 })
        .y_label_area_size(if text { 55 } else { 10 });
    if text {
        b.caption(title, ("sans-serif", 20));
    }
    let mut chart = b
        .build_cartesian_2d(0.5..x1 + 0.5, (y0 - dy)..(y1 + dy))
        .map_err(|e| anyhow!("{e}"))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("epoch").y_desc(ylabel);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| anyhow!("{e}"))?;
    draw_lines(&mut chart, lines, 3, text)
}

pub fn plot_curves(rows: &[EpochRow], path: &Path) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ep = |r: &EpochRow| r.epoch as f64;
    let series = |name: &str, points: Vec<(f64, f64)>| Series {
        name: name.to_string(),
        points,
    };
    let loss = vec![series(
        "train loss",
        rows.iter().map(|r| (ep(r), r.train_loss)).collect(),
    )];
    let mut acc = vec![series(
        "model",
        rows.iter().map(|r| (ep(r), 100.0 * r.top1)).collect(),
    )];
    let ema: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.ema_top1.map(|e| (ep(r), 100.0 * e)))
        .collect();
    if !ema.is_empty() {
        acc.push(series("EMA", ema));
    }
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1200, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let (l, r) = root.split_horizontally(600);
        panel(&l, "training loss", "loss", &loss)?;
        panel(&r, "validation top-1", "top-1 (%)", &acc)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}
