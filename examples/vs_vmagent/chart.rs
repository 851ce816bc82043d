//! The results as a Markdown table (with the metricspool/vmagent ratio) and a PNG chart.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use crate::phases::{Figures, Params};
use crate::procs::Kind;

fn m(x: f64) -> String {
    format!("{:.2} M", x / 1e6)
}

fn opt(x: Option<f64>, unit: &str) -> String {
    x.map_or("–".into(), |v| format!("{v:.3} {unit}"))
}

/// One table row: label, one cell per agent, the ratio of the first two numbers.
fn row(out: &mut String, label: &str, cells: &[String], nums: &[f64]) {
    let ratio = match nums {
        [a, b] if *b > 0.0 && a.is_finite() && b.is_finite() => format!("{:.2}×", a / b),
        _ => "–".into(),
    };
    let _ = writeln!(out, "| {label} | {} | {ratio} |", cells.join(" | "));
}

/// The results table in Markdown.
pub fn table(all: &[(Kind, Figures)], p: &Params, sink: (f64, f64)) -> String {
    let mut o = String::new();
    let names: Vec<&str> = all.iter().map(|(k, _)| k.name()).collect();
    let _ = writeln!(o, "\n| figure | {} | ratio |", names.join(" | "));
    let _ = writeln!(o, "|---|{}---|", "---|".repeat(all.len()));
    let f: Vec<&Figures> = all.iter().map(|(_, f)| f).collect();
    let r = |o: &mut String, label: &str, g: &dyn Fn(&Figures) -> (String, f64)| {
        let (cells, nums): (Vec<String>, Vec<f64>) = f.iter().map(|x| g(x)).unzip();
        row(o, label, &cells, &nums);
    };
    let _ = writeln!(
        o,
        "| null sink (sender ceiling, {} conns) | {} samples/s on {:.2} cores (sender + sink) | | |",
        p.conns,
        m(sink.0),
        sink.1
    );
    r(&mut o, "1. ingest, backend down: samples/s", &|x| {
        (m(x.ingest_rate), x.ingest_rate)
    });
    r(&mut o, "1. agent cores while ingesting", &|x| {
        (format!("{:.2}", x.ingest_cores), x.ingest_cores)
    });
    r(&mut o, "1. samples/s per agent core", &|x| {
        (m(x.per_core()), x.per_core())
    });
    r(&mut o, "1. load generator cores meanwhile", &|x| {
        (format!("{:.2}", x.client_cores), x.client_cores)
    });
    r(&mut o, "1. requests failed", &|x| {
        (x.ingest_failed.to_string(), f64::NAN)
    });
    r(&mut o, "1. peak RSS (VmHWM)", &|x| {
        (format!("{:.0} MiB", x.peak_rss_mib), x.peak_rss_mib)
    });
    r(
        &mut o,
        "1. bytes on disk per sample (du, after clean stop)",
        &|x| (format!("{:.2}", x.bytes_per_sample()), x.bytes_per_sample()),
    );
    r(
        &mut o,
        "1. bytes on disk per sample right after ingest",
        &|x| {
            let b = x.du_after_ingest as f64 / x.ingest_samples.max(1) as f64;
            (format!("{b:.2}"), b)
        },
    );
    for (i, &step) in p.steps.iter().enumerate() {
        r(
            &mut o,
            &format!("5. RSS at {} buffered", m(step as f64)),
            &|x| {
                x.rss_at.get(i).map_or(("–".into(), f64::NAN), |s| {
                    (format!("{:.0} MiB (peak {:.0})", s.1, s.2), s.1)
                })
            },
        );
    }
    r(&mut o, "6. clean stop (SIGTERM to exit)", &|x| {
        (format!("{:.3} s", x.stop_seconds), x.stop_seconds)
    });
    r(
        &mut o,
        "6. restart over the backlog: spawn to healthy",
        &|x| {
            (
                opt(x.restart_health, "s"),
                x.restart_health.unwrap_or(f64::NAN),
            )
        },
    );
    r(&mut o, "6. spawn to /readyz", &|x| {
        (
            opt(x.restart_ready, "s"),
            x.restart_ready.unwrap_or(f64::NAN),
        )
    });
    r(&mut o, "2. drain: backend healthy to first sample", &|x| {
        (opt(x.drain.first, "s"), x.drain.first.unwrap_or(f64::NAN))
    });
    r(&mut o, "2. drain: samples/s into VictoriaMetrics", &|x| {
        (m(x.drain.rate()), x.drain.rate())
    });
    r(&mut o, "2. drain: agent cores / VM cores", &|x| {
        (
            format!("{:.2} / {:.2}", x.drain.agent_cores, x.drain.vm_cores),
            x.drain.agent_cores,
        )
    });
    r(&mut o, "2. count in VictoriaMetrics / buffered", &|x| {
        (
            format!(
                "{} / {}",
                x.drain_count.map_or("?".into(), |c| c.to_string()),
                x.ingest_samples
            ),
            f64::NAN,
        )
    });
    r(&mut o, "3. pass-through end to end: samples/s", &|x| {
        (m(x.pass_rate), x.pass_rate)
    });
    r(&mut o, "3. pass-through: acknowledged samples/s", &|x| {
        (m(x.pass_ingest_rate), x.pass_ingest_rate)
    });
    r(&mut o, "3. pass-through: agent cores / VM cores", &|x| {
        (
            format!("{:.2} / {:.2}", x.pass_agent_cores, x.pass_vm_cores),
            x.pass_agent_cores,
        )
    });
    r(&mut o, "3. count in VictoriaMetrics / sent", &|x| {
        (
            format!(
                "{} / {}",
                x.pass_count.map_or("?".into(), |c| c.to_string()),
                p.pass_samples
            ),
            f64::NAN,
        )
    });
    r(&mut o, "4. kill -9: acknowledged / issued samples", &|x| {
        (format!("{} / {}", x.kill.acked, x.kill.issued), f64::NAN)
    });
    r(&mut o, "4. kill -9: killed after (still sending?)", &|x| {
        let s = if x.kill.still_sending { "yes" } else { "no" };
        (format!("{:.1} s ({s})", x.kill.at_seconds), f64::NAN)
    });
    r(&mut o, "4. kill -9: acknowledged samples lost", &|x| {
        let pct = |n: u64| 100.0 * n as f64 / x.kill.acked.max(1) as f64;
        let s = if x.kill.lost_lo == x.kill.lost_hi {
            format!("{} ({:.1} %)", x.kill.lost_lo, pct(x.kill.lost_lo))
        } else {
            format!(
                "{}–{} ({:.1}–{:.1} %)",
                x.kill.lost_lo,
                x.kill.lost_hi,
                pct(x.kill.lost_lo),
                pct(x.kill.lost_hi)
            )
        };
        (s, f64::NAN)
    });
    r(&mut o, "4. kill -9: duplicated samples", &|x| {
        (x.kill.duplicated.to_string(), f64::NAN)
    });
    o
}

/// Grouped bars: samples/s (ingest, per core, drain, pass-through) and bytes per sample.
pub fn png(all: &[(Kind, Figures)], path: &Path) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the chart's directory");
    }
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .expect("DejaVuSans.ttf (apt-get install fonts-dejavu-core)");
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into()))
        .map_err(|_| "invalid font")
        .expect("register the font");
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let (left, right) = root.split_horizontally(820);
    let groups = [
        "ingest (backend down)",
        "ingest per core",
        "drain into VM",
        "pass-through",
    ];
    let rates: Vec<Vec<f64>> = all
        .iter()
        .map(|(_, f)| {
            vec![
                f.ingest_rate / 1e6,
                f.per_core() / 1e6,
                f.drain.rate() / 1e6,
                f.pass_rate / 1e6,
            ]
        })
        .collect();
    bars(
        &left,
        "M samples/s (higher is better)",
        &groups,
        &rates,
        all,
    );
    let bytes: Vec<Vec<f64>> = all
        .iter()
        .map(|(_, f)| vec![f.bytes_per_sample()])
        .collect();
    bars(
        &right,
        "bytes on disk per sample (lower is better)",
        &["buffered backlog"],
        &bytes,
        all,
    );
    root.present().expect("write the PNG");
}

const COLORS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14)];

fn bars(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    groups: &[&str],
    values: &[Vec<f64>],
    all: &[(Kind, Figures)],
) {
    let ymax = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..ymax.max(1e-9))
        .expect("chart");
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .label_style(("sans-serif", 14))
        .draw()
        .expect("mesh");
    let n = all.len().max(1) as f64;
    let w = 0.8 / n;
    for (a, ((kind, _), vals)) in all.iter().zip(values).enumerate() {
        let color = COLORS[a % COLORS.len()];
        chart
            .draw_series(vals.iter().enumerate().map(|(g, &v)| {
                let x0 = g as f64 + 0.1 + a as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w * 0.95, v)], color.filled())
            }))
            .expect("bars")
            .label(kind.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        chart
            .draw_series(vals.iter().enumerate().map(|(g, &v)| {
                let x0 = g as f64 + 0.1 + a as f64 * w;
                Text::new(format!("{v:.2}"), (x0, v + ymax * 0.03), ("sans-serif", 14))
            }))
            .expect("values");
    }
    chart
        .draw_series(groups.iter().enumerate().map(|(g, name)| {
            Text::new(
                (*name).to_owned(),
                (g as f64 + 0.12, -ymax * 0.025),
                ("sans-serif", 14),
            )
        }))
        .expect("group labels");
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .label_font(("sans-serif", 16))
        .draw()
        .expect("legend");
}
