//! How results are shown: Markdown tables, percentiles and the number
//! formats shared by every benchmark.

use std::fmt;

/// A Markdown table.
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.to_owned(),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "### {}", self.title)?;
        writeln!(f)?;
        writeln!(f, "| {} |", self.header.join(" | "))?;
        let rule: Vec<&str> = self.header.iter().map(|_| "---").collect();
        writeln!(f, "| {} |", rule.join(" | "))?;
        for row in &self.rows {
            writeln!(f, "| {} |", row.join(" | "))?;
        }
        Ok(())
    }
}

/// Percentiles of sorted latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: usize,
    pub p50: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
}

impl Latency {
    pub fn of_sorted(sorted: &[u32]) -> Latency {
        Latency {
            count: sorted.len(),
            p50: percentile(sorted, 0.50),
            p99: percentile(sorted, 0.99),
            p999: percentile(sorted, 0.999),
            max: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// The smallest value with at least `q` of the values at or below it
/// (nearest rank); 0 for no values.
pub fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds, switching to milliseconds from 10 ms on.
pub fn micros(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", f64::from(us) / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// CPU time per item in microseconds (per reply, per delivery); one item
/// at least, so that nothing divides by zero.
pub fn micros_per(cpu: std::time::Duration, items: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / items.max(1) as f64
}

/// `a / b` as "1.23×", or "–" when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "–".to_owned()
    } else {
        format!("{:.2}×", a / b)
    }
}

/// The median of sorted durations (the mean of the middle two for an even
/// count); zero for none.
pub fn median(sorted: &[std::time::Duration]) -> std::time::Duration {
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => std::time::Duration::ZERO,
        n if n % 2 == 0 => (sorted[mid - 1] + sorted[mid]) / 2,
        _ => sorted[mid],
    }
}

/// A duration in milliseconds.
pub fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A count with thousands separators: 12,345.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&values, 0.5), 500);
        assert_eq!(percentile(&values, 0.99), 990);
        assert_eq!(percentile(&values, 0.999), 999);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn formats() {
        assert_eq!(micros(950), "950 µs");
        assert_eq!(micros(12_340), "12.3 ms");
        assert_eq!(ratio(3.0, 2.0), "1.50×");
        assert_eq!(count(1_234_567), "1,234,567");
        let mut table = Table::new("t", &["a", "b"]);
        table.row(vec!["1".into(), "2".into()]);
        assert_eq!(
            table.to_string(),
            "### t\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n"
        );
    }
}
