//! Reading samples out of Prometheus text exposition (what the admin `/metrics` serves).

/// The value of the sample whose name and labels are exactly `series` (e.g.
/// `crier_ws_sockets_open` or `crier_ws_upgrades_refused_total{reason="full"}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key.trim() == series).then(|| value.trim().parse().ok())?
    })
}

/// Every sample as (series, value), in order.
pub fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The `# TYPE` declared for `name`.
pub fn metric_type<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("# TYPE ")?;
        let (n, kind) = rest.split_once(' ')?;
        (n == name).then_some(kind.trim())
    })
}
