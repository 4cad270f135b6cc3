//! Summaries: the median run, the text table, JSON lines and the SVG plot.

use std::fmt::Write as _;

use crate::load::RunResult;

/// The figures of one (target, scenario, connections, depth) cell.
#[derive(Debug, Clone)]
pub struct Summary {
    pub target: String,
    pub scenario: String,
    pub connections: usize,
    pub depth: usize,
    /// Every run's ops/s, in run order.
    pub runs_ops: Vec<f64>,
    /// Every run's p99, in run order: the spread behind the median's.
    pub runs_p99_us: Vec<u64>,
    /// The median run (by ops/s).
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub client_cpu: Option<f64>,
    pub server_cpu: Option<f64>,
    pub errors: u64,
    /// Server and client CPU per operation (µs), the median over the runs:
    /// steadier than the rate on a shared machine, and what tells its
    /// regimes apart (the same server costs more per request when the
    /// cores are otherwise idle and its workers park between requests).
    pub server_us_per_op: Option<f64>,
    pub client_us_per_op: Option<f64>,
    /// The server's user-space CPU per operation (µs), the median over the
    /// runs: its own code and runtime, without the kernel's share.
    pub server_user_us_per_op: Option<f64>,
    /// Against the baseline measured in the same session, if any: the
    /// ratios of the two medians.
    pub ratio_ops: Option<f64>,
    pub ratio_p99: Option<f64>,
    /// Run by run against the baseline's run just before it (the rates'
    /// ratio, and the ratio of server CPU per operation): the median and
    /// the range. A busy or quiet patch of the machine falls on both runs
    /// of a pair, so these drift less than the ratio of the medians.
    pub paired_ops: Option<Spread>,
    pub paired_cpu: Option<Spread>,
}

/// A median with the range it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.retain(|value| value.is_finite());
        values.sort_by(f64::total_cmp);
        let (min, max) = (*values.first()?, *values.last()?);
        let middle = values.len() / 2;
        let median =
            if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 };
        Some(Spread { median, min, max })
    }
}

/// CPU (in cores) per operation of `run`, in µs.
fn us_per_op(cpu: Option<f64>, run: &RunResult) -> Option<f64> {
    let ops = run.ops_per_sec();
    cpu.filter(|_| ops > 0.0).map(|cores| cores / ops * 1e6)
}

/// Sets `summary`'s ratios to `base`, whose runs `theirs` alternated with
/// `mine` (run i of each in the same pair).
pub fn compare(summary: &mut Summary, base: &Summary, mine: &[RunResult], theirs: &[RunResult]) {
    summary.ratio_ops = Some(summary.ops_per_sec / base.ops_per_sec.max(1e-9));
    summary.ratio_p99 = Some(summary.p99_us as f64 / base.p99_us.max(1) as f64);
    let pairs = || mine.iter().zip(theirs);
    summary.paired_ops =
        Spread::of(pairs().map(|(a, b)| a.ops_per_sec() / b.ops_per_sec().max(1e-9)).collect());
    summary.paired_cpu = Spread::of(
        pairs()
            .filter_map(|(a, b)| Some(us_per_op(a.server_cpu, a)? / us_per_op(b.server_cpu, b)?))
            .collect(),
    );
}

pub fn summarize(
    target: &str,
    scenario: &str,
    connections: usize,
    depth: usize,
    runs: &[RunResult],
) -> Summary {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| runs[a].ops_per_sec().total_cmp(&runs[b].ops_per_sec()));
    let median = &runs[order[order.len() / 2]];
    Summary {
        target: target.to_owned(),
        scenario: scenario.to_owned(),
        connections,
        depth,
        runs_ops: runs.iter().map(RunResult::ops_per_sec).collect(),
        runs_p99_us: runs.iter().map(|run| run.quantile_us(0.99)).collect(),
        ops_per_sec: median.ops_per_sec(),
        p50_us: median.quantile_us(0.5),
        p99_us: median.quantile_us(0.99),
        p999_us: median.quantile_us(0.999),
        client_cpu: median.client_cpu,
        server_cpu: median.server_cpu,
        errors: runs.iter().map(|run| run.errors).sum(),
        server_us_per_op: Spread::of(runs.iter().filter_map(|run| us_per_op(run.server_cpu, run)).collect())
            .map(|spread| spread.median),
        client_us_per_op: Spread::of(runs.iter().filter_map(|run| us_per_op(run.client_cpu, run)).collect())
            .map(|spread| spread.median),
        server_user_us_per_op: Spread::of(
            runs.iter().filter_map(|run| us_per_op(run.server_user_cpu, run)).collect(),
        )
        .map(|spread| spread.median),
        ratio_ops: None,
        ratio_p99: None,
        paired_ops: None,
        paired_cpu: None,
    }
}

pub fn run_line(
    target: &str,
    scenario: &str,
    connections: usize,
    depth: usize,
    index: usize,
    run: &RunResult,
) -> String {
    format!(
        "  run {index}: {target:<10} {scenario:<13} conns {connections:>5} depth {depth:>3}  {:>10.0} ops/s  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  client cpu {}  server cpu {}  errors {}",
        run.ops_per_sec(),
        run.quantile_us(0.5),
        run.quantile_us(0.99),
        run.quantile_us(0.999),
        cpu_text(run.client_cpu),
        cpu_text(run.server_cpu),
        run.errors
    )
}

/// A CPU figure in cores, or "-" when it is unavailable.
fn cpu_text(cpu: Option<f64>) -> String {
    cpu.map_or("-".to_owned(), |cpu| format!("{cpu:.2}"))
}

pub fn table_header() -> String {
    "target     scenario      conns depth       ops/s   p50 µs   p99 µs p99.9 µs  cl.cpu  sv.cpu  vs-null ops  vs-null p99  errors  sv µs/op  user µs/op  paired ops (range)  paired cpu".to_owned()
}

pub fn table_row(summary: &Summary) -> String {
    let ratio = |value: Option<f64>| value.map_or("-".to_owned(), |ratio| format!("{ratio:.2}"));
    let spread = |value: Option<Spread>| {
        value.map_or("-".to_owned(), |s| format!("{:.2} ({:.2}-{:.2})", s.median, s.min, s.max))
    };
    format!(
        "{:<10} {:<13} {:>5} {:>5} {:>11.0} {:>8} {:>8} {:>8} {:>7} {:>7} {:>12} {:>12} {:>7} {:>9} {:>11} {:>19} {:>11}",
        summary.target,
        summary.scenario,
        summary.connections,
        summary.depth,
        summary.ops_per_sec,
        summary.p50_us,
        summary.p99_us,
        summary.p999_us,
        cpu_text(summary.client_cpu),
        cpu_text(summary.server_cpu),
        ratio(summary.ratio_ops),
        ratio(summary.ratio_p99),
        summary.errors,
        summary.server_us_per_op.map_or("-".to_owned(), |us| format!("{us:.2}")),
        summary.server_user_us_per_op.map_or("-".to_owned(), |us| format!("{us:.2}")),
        spread(summary.paired_ops),
        summary.paired_cpu.map_or("-".to_owned(), |cpu| format!("{:.2}", cpu.median)),
    )
}

/// One JSON object on one line (hand-written: the fields are all plain).
pub fn json_line(summary: &Summary) -> String {
    let option = |value: Option<f64>| value.map_or("null".to_owned(), |v| format!("{v:.4}"));
    let runs: Vec<String> = summary.runs_ops.iter().map(|ops| format!("{ops:.1}")).collect();
    let p99s: Vec<String> = summary.runs_p99_us.iter().map(u64::to_string).collect();
    let spread = |value: Option<Spread>| {
        value.map_or("null".to_owned(), |s| {
            format!("{{\"median\":{:.4},\"min\":{:.4},\"max\":{:.4}}}", s.median, s.min, s.max)
        })
    };
    format!(
        "{{\"target\":\"{}\",\"scenario\":\"{}\",\"connections\":{},\"depth\":{},\"ops_per_sec\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"client_cpu\":{},\"server_cpu\":{},\"errors\":{},\"ratio_ops\":{},\"ratio_p99\":{},\"runs_ops_per_sec\":[{}],\"runs_p99_us\":[{}],\"server_us_per_op\":{},\"client_us_per_op\":{},\"server_user_us_per_op\":{},\"paired_ops\":{},\"paired_cpu\":{}}}",
        summary.target,
        summary.scenario,
        summary.connections,
        summary.depth,
        summary.ops_per_sec,
        summary.p50_us,
        summary.p99_us,
        summary.p999_us,
        summary.client_cpu.map_or("null".to_owned(), |cpu| format!("{cpu:.3}")),
        option(summary.server_cpu),
        summary.errors,
        option(summary.ratio_ops),
        option(summary.ratio_p99),
        runs.join(","),
        p99s.join(","),
        option(summary.server_us_per_op),
        option(summary.client_us_per_op),
        option(summary.server_user_us_per_op),
        spread(summary.paired_ops),
        spread(summary.paired_cpu),
    )
}

const COLORS: &[&str] =
    &["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// Two panels (ops/s and p99 against connections, log-scaled x), one line
/// per (target, scenario). Plain SVG, readable in any browser.
pub fn plot_svg(summaries: &[Summary], title: &str) -> String {
    let mut series: Vec<(String, Vec<&Summary>)> = Vec::new();
    for summary in summaries {
        let key = format!("{} {} d{}", summary.target, summary.scenario, summary.depth);
        match series.iter_mut().find(|(name, _)| *name == key) {
            Some((_, points)) => points.push(summary),
            None => series.push((key, vec![summary])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by_key(|summary| summary.connections);
    }
    let (width, height, panel_w, panel_h, left, top) = (1000.0, 460.0, 400.0, 300.0, 70.0, 50.0);
    let conns: Vec<f64> = summaries.iter().map(|s| s.connections.max(1) as f64).collect();
    let (x_min, x_max) = (
        conns.iter().cloned().fold(f64::MAX, f64::min).ln(),
        conns.iter().cloned().fold(1.0, f64::max).ln().max(0.1),
    );
    let x_span = (x_max - x_min).max(0.1);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
    type Panel = (&'static str, fn(&Summary) -> f64);
    let panels: [Panel; 2] =
        [("throughput (ops/s)", |s| s.ops_per_sec), ("p99 latency (µs)", |s| s.p99_us as f64)];
    for (index, (label, value)) in panels.iter().enumerate() {
        let x0 = left + index as f64 * (panel_w + 110.0);
        let y_max = summaries.iter().map(value).fold(1.0, f64::max) * 1.1;
        let _ = write!(
            svg,
            "<rect x=\"{x0}\" y=\"{top}\" width=\"{panel_w}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#888\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">connections</text>\n",
            x0 + panel_w / 2.0,
            top - 8.0,
            x0 + panel_w / 2.0,
            top + panel_h + 34.0
        );
        for tick in 0..=4 {
            let y_value = y_max * tick as f64 / 4.0;
            let y = top + panel_h - panel_h * tick as f64 / 4.0;
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}</text><line x1=\"{x0}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#eee\"/>",
                x0 - 4.0,
                y + 4.0,
                y_value,
                x0 + panel_w
            );
        }
        let mut ticks: Vec<usize> = summaries.iter().map(|s| s.connections).collect();
        ticks.sort_unstable();
        ticks.dedup();
        for conns in ticks {
            let x = x0 + panel_w * ((conns.max(1) as f64).ln() - x_min) / x_span;
            let _ = writeln!(
                svg,
                "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{conns}</text>",
                top + panel_h + 16.0
            );
        }
        for (series_index, (_, points)) in series.iter().enumerate() {
            let color = COLORS[series_index % COLORS.len()];
            let coords: Vec<String> = points
                .iter()
                .map(|summary| {
                    let x = x0 + panel_w * ((summary.connections.max(1) as f64).ln() - x_min) / x_span;
                    let y = top + panel_h - panel_h * value(summary) / y_max;
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
                coords.join(" ")
            );
            for point in &coords {
                let (x, y) = point.split_once(',').expect("x,y");
                let _ = writeln!(svg, "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>");
            }
        }
    }
    for (series_index, (name, _)) in series.iter().enumerate() {
        let color = COLORS[series_index % COLORS.len()];
        let x = left + (series_index % 4) as f64 * 230.0;
        let y = top + panel_h + 60.0 + (series_index / 4) as f64 * 18.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{color}\"/><text x=\"{}\" y=\"{y}\">{}</text>",
            y - 5.0,
            x + 20.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(client_cpu: Option<f64>, server_cpu: Option<f64>) -> Summary {
        Summary {
            target: "latchkey".to_owned(),
            scenario: "ping".to_owned(),
            connections: 16,
            depth: 1,
            runs_ops: vec![1000.0],
            runs_p99_us: vec![99],
            ops_per_sec: 1000.0,
            p50_us: 50,
            p99_us: 99,
            p999_us: 999,
            client_cpu,
            server_cpu,
            errors: 0,
            server_us_per_op: None,
            client_us_per_op: None,
            server_user_us_per_op: None,
            ratio_ops: None,
            ratio_p99: None,
            paired_ops: None,
            paired_cpu: None,
        }
    }

    fn run(ops: u64, server_cpu: Option<f64>) -> RunResult {
        RunResult {
            ops,
            errors: 0,
            elapsed: std::time::Duration::from_secs(1),
            histogram: hdrhistogram::Histogram::new(3).unwrap(),
            client_cpu: Some(0.5),
            server_cpu,
            server_user_cpu: server_cpu.map(|cores| cores / 4.0),
        }
    }

    #[test]
    fn a_spread_is_the_median_and_range_of_the_finite_values() {
        let spread = |values: &[f64]| Spread::of(values.to_vec());
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some(Spread { median: 2.0, min: 1.0, max: 3.0 }));
        assert_eq!(spread(&[4.0, 1.0, 3.0, 2.0]), Some(Spread { median: 2.5, min: 1.0, max: 4.0 }));
        assert_eq!(spread(&[f64::NAN, 5.0, f64::INFINITY]), Some(Spread { median: 5.0, min: 5.0, max: 5.0 }));
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[f64::NAN]), None);
    }

    #[test]
    fn pairs_are_compared_run_by_run() {
        // Run 0 is a slow patch for both, run 1 a fast one; the server under
        // test does 0.8 × its baseline's rate at 1.25 × its CPU per op in each.
        let theirs = [run(100_000, Some(1.0)), run(200_000, Some(1.0))];
        let mine = [run(80_000, Some(1.0)), run(160_000, Some(1.0))];
        let base = summarize("null", "ping", 16, 1, &theirs);
        let mut summary = summarize("latchkey", "ping", 16, 1, &mine);
        compare(&mut summary, &base, &mine, &theirs);
        let ops = summary.paired_ops.unwrap();
        assert!(
            (ops.median - 0.8).abs() < 1e-9 && (ops.min - 0.8).abs() < 1e-9 && (ops.max - 0.8).abs() < 1e-9
        );
        assert!((summary.paired_cpu.unwrap().median - 1.25).abs() < 1e-9);
        // The medians' ratio: the median run of each (the upper of two).
        assert!((summary.ratio_ops.unwrap() - 0.8).abs() < 1e-9);
        // µs per op: the median over the runs, 1 core at 80k and 160k ops/s.
        assert!((summary.server_us_per_op.unwrap() - (12.5 + 6.25) / 2.0).abs() < 1e-9);
        // A quarter of it in user space.
        assert!((summary.server_user_us_per_op.unwrap() - (12.5 + 6.25) / 8.0).abs() < 1e-9);
        assert!(
            json_line(&summary).contains(r#""server_user_us_per_op":2.3438,"#),
            "{}",
            json_line(&summary)
        );
        assert!(json_line(&summary).contains(r#""paired_ops":{"median":0.8000,"min":0.8000,"max":0.8000}"#));
        assert!(
            table_row(&summary).contains("9.38        2.34    0.80 (0.80-0.80)        1.25"),
            "{}",
            table_row(&summary)
        );
        // Without the server's CPU, no CPU ratio.
        let blind = [run(80_000, None), run(160_000, None)];
        let mut summary = summarize("latchkey", "ping", 16, 1, &blind);
        compare(&mut summary, &base, &blind, &theirs);
        assert_eq!((summary.paired_cpu, summary.server_us_per_op), (None, None));
        assert!(
            json_line(&summary).contains(
                r#""server_us_per_op":null,"client_us_per_op":4.6875,"server_user_us_per_op":null,"#
            )
        );
    }

    #[test]
    fn unavailable_cpu_figures_print_as_missing() {
        let measured = summary(Some(0.38312), Some(0.8512));
        assert!(json_line(&measured).contains(r#""client_cpu":0.383,"server_cpu":0.8512,"#));
        assert!(table_row(&measured).contains("   0.38    0.85 "), "{}", table_row(&measured));
        let unavailable = summary(None, None);
        assert!(json_line(&unavailable).contains(r#""client_cpu":null,"server_cpu":null,"#));
        assert!(table_row(&unavailable).contains("      -       - "), "{}", table_row(&unavailable));
    }
}
