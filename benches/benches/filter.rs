//! What the wasm filter does per request, natively compiled (the V8 build runs the same
//! code; its overhead in Envoy is measured by the load benchmark).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kubegate_benches::header_lines::HeaderLines as Lines;
use kubegate_decision::{Decision, Impersonation, REQUEST_ID_EXTRA};
use kubegate_wasm_filter::headers::{inject_stage, strip_stage};
use std::collections::BTreeMap;

/// The headers `kubectl get pods` sends, plus Envoy's own.
fn kubectl_request() -> Lines {
    let pairs = [
        (":method", "GET"),
        (":path", "/api/v1/namespaces/default/pods?limit=500"),
        (":authority", "127.0.0.1:8443"),
        (":scheme", "https"),
        ("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"),
        ("user-agent", "kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0"),
        ("authorization", "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJhbGljZSJ9.c2ln"),
        ("kubectl-command", "kubectl get"),
        ("kubectl-session", "1f0b6a6e-5a1e-4f57-9d39-0f6b0d2b4a11"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "7d0b6e2a-1c55-4f0e-9a43-3e3a2c7d9f10"),
    ];
    Lines(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
}

fn decision(groups: usize) -> Decision {
    Decision::impersonating(
        "kubernetes",
        "/api/v1/namespaces/default/pods?limit=500",
        Impersonation {
            user: "alice@example.com".into(),
            groups: (0..groups).map(|i| format!("privilege-level-{i}")).collect(),
            uid: Some("b3f1a8c2-alice".into()),
            extra: BTreeMap::from([(
                REQUEST_ID_EXTRA.to_string(),
                vec!["7d0b6e2a-1c55-4f0e-9a43-3e3a2c7d9f10".into()],
            )]),
        },
    )
}

fn filter(c: &mut Criterion) {
    let request = kubectl_request();
    c.bench_function("strip stage, kubectl get pods headers", |b| {
        b.iter(|| {
            let mut headers = request.clone();
            strip_stage(&mut headers);
            black_box(headers)
        })
    });
    for groups in [1, 10] {
        let json = decision(groups).to_json();
        c.bench_function(&format!("decode decision, {groups} groups"), |b| {
            b.iter(|| Decision::from_json(black_box(json.as_bytes())))
        });
        let parsed = decision(groups);
        c.bench_function(&format!("inject stage, {groups} groups"), |b| {
            b.iter(|| {
                let mut headers = request.clone();
                let _ = inject_stage(&mut headers, black_box(&parsed), None);
                black_box(headers)
            })
        });
    }
}

criterion_group!(benches, filter);
criterion_main!(benches);
