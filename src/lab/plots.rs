//! PNG plots: learned vs true reward (the paper's Figure 1 view) and ε̂ vs weak negatives.

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::methods::MethodKind;
use super::{BanditResults, PolicySample};

/// Picks one statistic of a method's results.
type StatOf = fn(&super::MethodResult) -> &super::Summary;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

pub(crate) fn font() {
    REGISTER.call_once(|| {
        // The embedded file is a valid TrueType font; a failure would only lose the labels.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// The legend box of every plot: at `corner`, on a translucent white background.
pub(crate) fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    corner: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(corner)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)
}

pub(crate) fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

pub(crate) fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

/// One panel per policy: learned reward (per-prompt mean offset removed) vs r*, the slope-1 line,
/// compared responses in blue, never-compared ones in red.
pub fn scatter(path: &Path, samples: &[PolicySample]) -> anyhow::Result<()> {
    font();
    let cols = 2usize;
    let rows = samples.len().div_ceil(cols).max(1);
    let root = BitMapBackend::new(path, (520 * cols as u32, 440 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((rows, cols));
    for (panel, s) in panels.iter().zip(samples) {
        let (x0, x1) = bounds(s.points.iter().map(|p| p.0));
        let (y0, y1) = bounds(s.points.iter().map(|p| p.1).chain([x0, x1]));
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} (init {})", s.label, s.init), ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("true reward r*")
            .y_desc("learned reward r_θ − c(x)")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        let unseen = s.points.iter().filter(|p| !p.2).map(|p| Circle::new((p.0, p.1), 2, RED.mix(0.5).filled()));
        chart
            .draw_series(unseen)
            .map_err(err)?
            .label("never compared")
            .legend(|(x, y)| Circle::new((x, y), 3, RED.filled()));
        let seen = s.points.iter().filter(|p| p.2).map(|p| Circle::new((p.0, p.1), 2, BLUE.filled()));
        chart.draw_series(seen).map_err(err)?.label("compared").legend(|(x, y)| Circle::new((x, y), 3, BLUE.filled()));
        chart
            .draw_series(LineSeries::new([(x0, x0), (x1, x1)], BLACK.stroke_width(2)))
            .map_err(err)?
            .label("slope 1")
            .legend(|(x, y)| PathElement::new([(x - 8, y), (x + 8, y)], BLACK));
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    }
    root.present().map_err(err)
}

/// ε̂ (all, compared, never compared) of EPA strong+weak vs the number of weak negatives,
/// mean ± sd over inits, with DPO and EPA strong-only as horizontal references.
pub fn weak_sweep(path: &Path, r: &BanditResults) -> anyhow::Result<()> {
    font();
    let sweep: Vec<_> = r.methods.iter().filter(|m| m.kind == MethodKind::Epa).collect();
    if sweep.is_empty() {
        return Ok(());
    }
    let refs: Vec<_> = r.methods.iter().filter(|m| matches!(m.kind, MethodKind::Dpo | MethodKind::EpaStrong)).collect();
    let x = |n: usize| (n as f64).log2();
    let (x0, x1) = bounds(sweep.iter().map(|m| x(m.n_weak)));
    let ys = sweep
        .iter()
        .flat_map(|m| [&m.eps_hat, &m.eps_hat_seen, &m.eps_hat_unseen])
        .chain(refs.iter().map(|m| &m.eps_hat))
        .flat_map(|s| [s.mean - s.sd, s.mean + s.sd])
        .filter(|v| v.is_finite());
    let (y0, y1) = bounds(ys.chain([0.0]));
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("eps-hat vs number of weak negatives (EPA strong+weak)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("weak negatives per comparison (log scale)")
        .y_desc("eps-hat = mean_x Var_y(r_θ − r*)  (mean ± sd over inits)")
        .x_labels(((x1 - x0).ceil() as usize + 1).max(2))
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 { format!("{:.0}", v.round().exp2()) } else { String::new() }
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    let series: [(&str, RGBColor, StatOf); 3] = [
        ("all responses", BLACK, |m| &m.eps_hat),
        ("compared responses", BLUE, |m| &m.eps_hat_seen),
        ("never-compared responses", RED, |m| &m.eps_hat_unseen),
    ];
    for (name, color, get) in series {
        let pts: Vec<(f64, f64, f64)> =
            sweep.iter().map(|m| (x(m.n_weak), get(m).mean, get(m).sd)).filter(|p| p.1.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x - 8, y), (x + 8, y)], color.stroke_width(2)));
        chart
            .draw_series(
                pts.iter().map(|p| PathElement::new([(p.0, p.1 - p.2), (p.0, p.1 + p.2)], color.stroke_width(2))),
            )
            .map_err(err)?;
    }
    for (m, color) in refs.iter().zip([MAGENTA, GREEN]) {
        let y = m.eps_hat.mean;
        chart
            .draw_series(LineSeries::new([(x0, y), (x1, y)], color.stroke_width(1)))
            .map_err(err)?
            .label(format!("{}, all responses (reference)", m.label))
            .legend(move |(x, y)| PathElement::new([(x - 8, y), (x + 8, y)], color));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(err)
}
