//! h2load (Debian `nghttp2-client`), the C load generator the performance anchors in
//! `shared/performance.md` were measured with. It sends one fixed header set, so it
//! drives the single-user rows; its higher ceiling shows what the Rust generator (one
//! tokio thread) hides about plain Envoy.

use crate::load::LoadShape;
use std::time::Duration;

/// What one h2load run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct H2loadResult {
    pub requests: u64,
    /// 2xx responses.
    pub succeeded_2xx: u64,
    pub requests_per_second: f64,
    /// Mean time per request (h2load reports no percentiles for requests).
    pub mean: Duration,
    pub max: Duration,
}

/// Whether h2load is installed.
pub fn available() -> bool {
    std::process::Command::new("h2load").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Runs h2load against `https://address/path` with `shape`, one thread, sending `token`.
pub async fn run(address: &str, path: &str, token: &str, shape: LoadShape) -> anyhow::Result<H2loadResult> {
    let mut command = tokio::process::Command::new("h2load");
    command.args(["-t", "1", "-n", &shape.requests.to_string(), "-c", &shape.connections.to_string()]).args([
        "-m",
        &shape.streams.to_string(),
        "-H",
        &format!("authorization: Bearer {token}"),
    ]);
    if !shape.http2 {
        command.arg("--h1");
    }
    let output = command.arg(format!("https://{address}{path}")).output().await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "h2load failed: {}", String::from_utf8_lossy(&output.stderr));
    parse(&stdout)
}

/// Reads h2load's summary.
pub fn parse(out: &str) -> anyhow::Result<H2loadResult> {
    let line = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .ok_or_else(|| anyhow::anyhow!("h2load printed no `{prefix}` line:\n{out}"))
    };
    let requests_per_second = line("finished in")?
        .split(", ")
        .find_map(|part| part.strip_suffix(" req/s")?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no req/s in h2load's output"))?;
    let counts = line("requests:")?;
    let count = |what: &str| {
        counts.split(", ").find_map(|p| p.trim_start_matches("requests: ").strip_suffix(what)?.trim().parse().ok())
    };
    let status = line("status codes:")?;
    let succeeded_2xx = status
        .trim_start_matches("status codes:")
        .split(", ")
        .find_map(|p| p.trim().strip_suffix(" 2xx")?.parse().ok());
    let times: Vec<&str> =
        line("time for request:")?.trim_start_matches("time for request:").split_whitespace().collect();
    let duration = |i: usize| times.get(i).and_then(|t| parse_duration(t));
    Ok(H2loadResult {
        requests: count(" total").unwrap_or(0),
        succeeded_2xx: succeeded_2xx.unwrap_or(0),
        requests_per_second,
        mean: duration(2).unwrap_or_default(),
        max: duration(1).unwrap_or_default(),
    })
}

/// `123us`, `4.56ms`, `1.2s`.
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "starting benchmark...
spawning thread #0: 4 total client(s). 20000 total requests
TLS Protocol: TLSv1.3
Application protocol: h2
finished in 1.02s, 19607.84 req/s, 3.12MB/s
requests: 20000 total, 20000 started, 20000 done, 19990 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 19990 2xx, 0 3xx, 10 4xx, 0 5xx
traffic: 3.18MB (3334000) total, 1.01MB (1060000) headers (space savings 91.20%), 0B (0) data
                     min         max         mean         sd        +/- sd
time for request:      112us     12.34ms      3.21ms       1.02ms    70.00%
";

    #[test]
    fn reads_rate_counts_and_request_times() {
        let result = parse(OUTPUT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(result.requests, 20000);
        assert_eq!(result.succeeded_2xx, 19990);
        assert!((result.requests_per_second - 19607.84).abs() < 0.01);
        assert_eq!(result.mean, Duration::from_secs_f64(3.21e-3));
        assert_eq!(result.max, Duration::from_secs_f64(12.34e-3));
    }

    #[test]
    fn output_without_a_summary_is_an_error() {
        assert!(parse("connect failed").is_err());
    }
}
